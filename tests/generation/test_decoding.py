"""sample_tokens: the draws of stock `generate` with the same processors, one forward a token, one cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, GenerationConfig, LogitsProcessorList

from larp_hf import CodebookLogitsProcessor, LarpVQVAEConfig, prior_config
from larp_hf.generation import (
    PerImageSamplingLogitsProcessor,
    PreallocatedLayer,
    gumbel_noise,
    image_generators,
    preallocated_cache,
    sample_tokens,
)
from larp_hf.generation.decoding import NOISE_STEPS
from larp_hf.prior import NEUTRAL_SAMPLING


K = 32  # codebook size; the grid is 8×8, so 64 tokens are sampled
VQVAE = LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[16], codebook_size=K)


def tiny_prior(architecture: str, num_classes: int = 0):
    torch.manual_seed(0)
    config = prior_config(VQVAE, preset="tiny", num_classes=num_classes, architecture=architecture, tokenizer_hash=None)
    return AutoModelForCausalLM.from_config(config).eval()


def prefixes(prior, batch_size: int, null: bool = False) -> torch.Tensor:
    """(B, P): BOS, then for a class-conditional prior class b % C (or the null class)."""
    larp = prior.config.larp
    bos = torch.full((batch_size, 1), larp["bos_token_id"])
    if larp["num_classes"] == 0:
        return bos
    classes = torch.arange(batch_size)[:, None] % larp["num_classes"] + larp["class_token_offset"]
    return torch.cat([bos, torch.full_like(classes, larp["null_class_token_id"]) if null else classes], dim=1)


def stock_generate(prior, input_ids, processors) -> torch.Tensor:
    """`generate` as the pipeline called it before: its own warpers off, the processors carry the whole policy."""
    config = GenerationConfig(
        **NEUTRAL_SAMPLING, do_sample=True, max_new_tokens=64, bos_token_id=K, pad_token_id=K, eos_token_id=None
    )
    with torch.no_grad():
        sequences = prior.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config,
            logits_processor=LogitsProcessorList(processors),
        )  # fmt: skip
    return sequences[:, input_ids.shape[1] :]


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_per_image_draws_are_those_of_stock_generate_with_the_same_processors(architecture, num_classes):
    prior = tiny_prior(architecture, num_classes)
    input_ids = prefixes(prior, 5)
    processor = CodebookLogitsProcessor(K, temperature=0.9, top_k=20, top_p=0.95)
    state = torch.random.get_rng_state()
    ours = sample_tokens(prior, input_ids, processor, 64, generators=image_generators(seed=5, first_index=3, count=5))
    assert torch.equal(torch.random.get_rng_state(), state)  # the draws came from the per-image generators alone
    stock = stock_generate(prior, input_ids, [processor, PerImageSamplingLogitsProcessor(image_generators(5, 3, 5))])
    assert 64 > 2 * NOISE_STEPS  # the noise is read in several blocks
    assert ours.shape == (5, 64) and torch.equal(ours, stock)
    # Row b depends on its own generator only.
    alone = sample_tokens(prior, input_ids[2:3], processor, 64, generators=image_generators(5, 3 + 2, 1))
    assert torch.equal(alone, ours[2:3])


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_without_generators_the_global_rng_draws_as_in_stock_generate(architecture):
    prior = tiny_prior(architecture)
    input_ids = prefixes(prior, 4)
    processor = CodebookLogitsProcessor(K, temperature=1.2)
    torch.manual_seed(7)
    ours = sample_tokens(prior, input_ids, processor, 64)
    torch.manual_seed(7)
    assert torch.equal(ours, stock_generate(prior, input_ids, [processor]))


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_guided_draws_mix_full_forwards_of_the_class_and_null_sequences(architecture):
    prior = tiny_prior(architecture, num_classes=3)
    input_ids, null_input_ids = prefixes(prior, 4), prefixes(prior, 4, null=True)
    processor = CodebookLogitsProcessor(K, temperature=0.8)
    ours = sample_tokens(
        prior, input_ids, processor, 64, generators=image_generators(1, 0, 4), null_input_ids=null_input_ids,
        guidance_scale=2.5,
    )  # fmt: skip
    # The reference: no cache at all, both whole sequences through the prior at every step, one draw per step.
    draw = PerImageSamplingLogitsProcessor(image_generators(1, 0, 4))
    sequences, null_sequences = input_ids, null_input_ids
    with torch.no_grad():
        for _ in range(64):
            with_class, with_null = prior(sequences).logits[:, -1], prior(null_sequences).logits[:, -1]
            scores = draw(sequences, processor(sequences, with_null + 2.5 * (with_class - with_null)))
            next_tokens = scores.argmax(dim=-1, keepdim=True)
            sequences = torch.cat([sequences, next_tokens], 1)
            null_sequences = torch.cat([null_sequences, next_tokens], 1)
    assert torch.equal(ours, sequences[:, 2:])


def test_gumbel_noise_reads_each_stream_in_order():
    together = gumbel_noise(image_generators(0, 0, 3), num_steps=5, vocab_size=37)
    generators = image_generators(0, 0, 3)
    one_at_a_time = torch.cat([gumbel_noise(generators, 1, 37) for _ in range(5)], dim=1)
    assert together.shape == (3, 5, 37) and together.dtype == torch.float64
    assert torch.equal(together, one_at_a_time)


def test_one_forward_a_token_into_a_cache_allocated_once():
    prior = tiny_prior("gpt2", num_classes=3)
    input_ids = prefixes(prior, 3)
    calls = []

    def record(module, args, kwargs):
        layer = kwargs["cache"].layers[0]
        buffer = layer.key_buffer.data_ptr() if layer.is_initialized else None
        calls.append((tuple(kwargs["input_ids"].shape), buffer))

    hook = prior.register_forward_pre_hook(record, with_kwargs=True)
    try:
        sample_tokens(prior, input_ids, CodebookLogitsProcessor(K), 64, generators=image_generators(0, 0, 3))
    finally:
        hook.remove()
    assert [shape for shape, _ in calls] == [(3, 2)] + [(3, 1)] * 63  # the prefix, then each new token but the last
    assert calls[0][1] is None and len({buffer for _, buffer in calls[1:]}) == 1  # written in place, never regrown


def test_the_preallocated_cache_gives_the_dynamic_caches_logits_and_refuses_overflow():
    prior = tiny_prior("llama")
    tokens = torch.randint(0, K, (2, 6))
    preallocated, dynamic = preallocated_cache(prior, max_length=6), DynamicCache(config=prior.config)
    with torch.no_grad():
        for position in range(6):
            step = tokens[:, position : position + 1]
            ours = prior(step, cache=preallocated, use_cache=True).logits
            theirs = prior(step, cache=dynamic, use_cache=True).logits
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        layer = preallocated.layers[0]
        assert layer.keys.shape[-2] == 6 and layer.keys.data_ptr() == layer.key_buffer.data_ptr()
        with pytest.raises(ValueError, match="holds 6 positions"):
            prior(tokens[:, :1], cache=preallocated, use_cache=True)
    assert isinstance(layer, PreallocatedLayer)


def test_bad_arguments_are_refused():
    prior = tiny_prior("gpt2", num_classes=3)
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        sample_tokens(prior, prefixes(prior, 3), CodebookLogitsProcessor(K), 4, generators=image_generators(0, 0, 2))
    with pytest.raises(ValueError, match="must have the same shape"):
        sample_tokens(
            prior, prefixes(prior, 3), CodebookLogitsProcessor(K), 4, null_input_ids=prefixes(prior, 2, null=True),
            guidance_scale=2.0,
        )  # fmt: skip
