"""CodebookLogitsProcessor against an independent (numpy) computation of the sampling distribution."""

import numpy as np
import pytest
import torch

from larp_hf import CodebookLogitsProcessor
from larp_hf.generation import PerImageSamplingLogitsProcessor, image_generators


K = 32  # codebook size; the scores below have 4 special tokens after the codes


def reference_probabilities(scores: np.ndarray, codebook_size: int, temperature: float, top_k=0, top_p=1.0):
    """softmax(logits / T) over the top-k codes (then the smallest nucleus holding top_p), zero elsewhere."""
    probabilities = np.zeros_like(scores, dtype=np.float64)
    for row, logits in enumerate(scores.astype(np.float64)):
        codes = logits[:codebook_size] / temperature
        kept = np.argsort(-codes, kind="stable")[: top_k or codebook_size]
        weights = np.exp(codes[kept] - codes[kept].max())
        weights /= weights.sum()
        if top_p < 1.0:
            # Keep codes in order of probability until their mass reaches top_p (the one crossing it stays).
            mass_before = np.cumsum(weights) - weights
            kept, weights = kept[mass_before < top_p], weights[mass_before < top_p]
            weights = weights / weights.sum()
        probabilities[row, kept] = weights
    return probabilities


def random_scores(rows=8, seed=0, special_boost=0.0):
    generator = torch.Generator().manual_seed(seed)
    scores = 3 * torch.randn(rows, K + 4, generator=generator)
    scores[:, K:] += special_boost
    return scores


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (0.9, 1, 1.0), (1.0, K, 1.0), (0.8, 0, 0.5),
     (1.0, 10, 0.9), (2.0, 0, 1.0)],
)
def test_distribution_matches_reference(temperature, top_k, top_p):
    scores = random_scores()
    processed = CodebookLogitsProcessor(K, temperature=temperature, top_k=top_k, top_p=top_p)(
        torch.zeros(8, 1, dtype=torch.long), scores
    )
    probabilities = processed.softmax(dim=-1).double().numpy()
    expected = reference_probabilities(scores.numpy(), K, temperature, top_k, top_p)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    # Sampling from either with the same seed draws the same tokens.
    torch.manual_seed(3)
    ours = torch.multinomial(processed.softmax(dim=-1), 50, replacement=True)
    torch.manual_seed(3)
    theirs = torch.multinomial(torch.from_numpy(expected).float(), 50, replacement=True)
    assert torch.equal(ours, theirs)


def test_top_k_keeps_exactly_k_codes():
    processed = CodebookLogitsProcessor(K, top_k=7)(torch.zeros(8, 1, dtype=torch.long), random_scores())
    assert (processed.isfinite().sum(dim=-1) == 7).all()


def test_returns_a_new_tensor_and_leaves_scores_alone():
    scores = random_scores()
    before = scores.clone()
    processed = CodebookLogitsProcessor(K, temperature=0.5, top_k=3, top_p=0.8)(torch.zeros(8, 1, dtype=torch.long), scores)
    assert processed is not scores
    assert torch.equal(scores, before)


def test_never_lets_a_special_token_through_over_many_sampled_steps():
    processor = CodebookLogitsProcessor(K, temperature=1.5)
    input_ids = torch.zeros(64, 1, dtype=torch.long)
    sampled = []
    for step in range(200):
        # The specials get by far the highest raw scores: unrestricted sampling would pick them nearly always.
        scores = random_scores(rows=64, seed=step, special_boost=30.0)
        assert (torch.multinomial(scores.softmax(-1), 1) >= K).float().mean() > 0.9
        sampled.append(torch.multinomial(processor(input_ids, scores).softmax(-1), 1))
    sampled = torch.cat(sampled)
    assert sampled.max() < K
    assert len(sampled.unique()) > K // 2  # still sampling, not collapsing onto one code


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": None}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": None}, "top_p"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": float("nan")}, "top_p"),
        ({"top_k": K + 1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"codebook_size": 0}, "codebook_size"),
    ],
)
def test_invalid_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CodebookLogitsProcessor(**{"codebook_size": K, **kwargs})


def test_scores_narrower_than_the_codebook_are_refused():
    with pytest.raises(ValueError, match="codebook size"):
        CodebookLogitsProcessor(K)(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, K - 1))


def test_per_image_sampling_draws_each_row_from_softmax_with_its_own_stream():
    scores = torch.tensor([[2.0, 1.0, 0.0, float("-inf")]])
    expected = scores.softmax(-1)[0]
    draws = torch.cat([
        PerImageSamplingLogitsProcessor(image_generators(seed, 0, 1))(None, scores).argmax(-1) for seed in range(4000)
    ])  # fmt: skip
    frequencies = torch.bincount(draws, minlength=4).double() / len(draws)
    torch.testing.assert_close(frequencies, expected.double(), atol=0.025, rtol=0)  # ~4 standard errors
    assert frequencies[3] == 0  # a removed token is never drawn
    # A row's draw depends on its own generator only, not on its neighbours in the batch.
    batch = torch.randn(5, K)
    together = PerImageSamplingLogitsProcessor(image_generators(3, 10, 5))(None, batch)
    for row in range(5):
        alone = PerImageSamplingLogitsProcessor(image_generators(3, 10 + row, 1))(None, batch[row : row + 1])
        assert torch.equal(together[row : row + 1], alone)
    assert (together.isfinite().sum(-1) == 1).all()
