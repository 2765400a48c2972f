"""Extreme sampling settings give their limit (greedy) or a clear refusal, never NaN scores and grids of code 0."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from larp_hf import CodebookLogitsProcessor, LarpVQVAEConfig, prior_config
from larp_hf.generation import check_guidance_scale, guided_logits, image_generators, sample_tokens


K = 32
VQVAE = LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[16], codebook_size=K)


def tiny_prior(num_classes: int = 0):
    torch.manual_seed(0)
    config = prior_config(VQVAE, preset="tiny", num_classes=num_classes, tokenizer_hash=None)
    return AutoModelForCausalLM.from_config(config).eval()


def greedy_tokens(prior, input_ids, steps: int) -> torch.Tensor:
    """Argmax over the code tokens at every step, the limit of a vanishing temperature or top-p."""
    codes_only = CodebookLogitsProcessor(K)
    sequences = input_ids
    with torch.no_grad():
        for _ in range(steps):
            scores = codes_only(sequences, prior(sequences).logits[:, -1].float())
            sequences = torch.cat([sequences, scores.argmax(dim=-1, keepdim=True)], dim=1)
    return sequences[:, input_ids.shape[1] :]


@pytest.mark.parametrize("setting", [{"temperature": 1e-300}, {"temperature": 1e-45}, {"top_p": 1e-300},
                                     {"temperature": 1e-300, "top_k": 5}])  # fmt: skip
def test_a_vanishing_temperature_or_top_p_samples_greedily(setting):
    prior = tiny_prior()
    input_ids = torch.full((3, 1), prior.config.larp["bos_token_id"])
    processor = CodebookLogitsProcessor(K, **setting)
    for seed in (0, 1):
        sampled = sample_tokens(prior, input_ids, processor, 16, generators=image_generators(seed, 0, 3))
        assert torch.equal(sampled, greedy_tokens(prior, input_ids, 16))


def test_ties_at_a_vanishing_temperature_stay_in_play_and_nothing_is_nan():
    scores = torch.tensor([[1.0, 3.0, 2.0, 3.0, 9.0]])  # codes 1 and 3 tie for the best; id 4 is not a code
    out = CodebookLogitsProcessor(4, temperature=1e-300)(None, scores)
    assert torch.equal(out.softmax(dim=-1), torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]))
    out = CodebookLogitsProcessor(4, top_p=1e-300)(None, scores)
    assert int(torch.isfinite(out).sum()) == 1 and out[0, [1, 3]].isfinite().any()


def test_an_ordinary_temperature_is_untouched_by_the_limit_path():
    scores = torch.randn(4, 40)
    assert torch.equal(CodebookLogitsProcessor(32, temperature=0.7)(None, scores)[:, :32], scores[:, :32] / 0.7)


def test_a_guidance_scale_past_float32_is_refused_and_a_huge_one_is_greedy_in_the_guidance_direction():
    with pytest.raises(ValueError, match="float32"):
        check_guidance_scale(1e308, None, num_classes=3)
    prior = tiny_prior(num_classes=3)
    larp = prior.config.larp
    bos = torch.full((3, 1), larp["bos_token_id"])
    input_ids = torch.cat([bos, torch.arange(3)[:, None] + larp["class_token_offset"]], dim=1)
    null_ids = torch.cat([bos, torch.full((3, 1), larp["null_class_token_id"])], dim=1)

    def sample(scale, seed):
        return sample_tokens(
            prior, input_ids, CodebookLogitsProcessor(K), 16, generators=image_generators(seed, 0, 3),
            null_input_ids=null_ids, guidance_scale=scale,
        )  # fmt: skip

    huge = sample(3e38, seed=0)  # overflows float32: mixed in float64
    assert torch.equal(huge, sample(3e38, seed=1))  # the noise no longer matters
    assert torch.equal(huge, sample(1e30, seed=2))  # float32 still holds it: the same limit
    assert huge.unique().numel() > 1


def test_guided_logits_that_overflow_float32_come_back_exact_in_float64():
    logits = torch.tensor([[3.0, 0.0, 1.0], [1.0, 1.0, 1.0]])  # a class row, then its null row
    guided = guided_logits(logits, 3e38)
    assert guided.dtype == torch.float64 and torch.isfinite(guided).all()
    assert guided.tolist() == [[1.0 + 6e38, 1.0 - 3e38, 1.0]]
    assert guided_logits(logits, 3.0).dtype == torch.float32
