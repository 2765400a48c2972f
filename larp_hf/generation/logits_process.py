"""Sampling policy for the prior: code tokens only, temperature, top-k and top-p, as one `LogitsProcessor`."""

import math
import numbers

import numpy as np
import torch
from transformers import LogitsProcessor


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class CodebookLogitsProcessor(LogitsProcessor):
    r"""
    Restricts next-token scores to code tokens and applies temperature, top-k and top-p, in that order.

    Code tokens are the vocabulary ids `0 … codebook_size - 1`; every id after them (BOS, class tokens, the null class)
    gets `-inf`, so a sampled token is always a codebook index. Temperature divides the code scores; top-k keeps the
    `top_k` highest code scores; top-p keeps the smallest set of codes whose probabilities (after temperature and top-k)
    sum to at least `top_p`. Everything removed is `-inf`, so `softmax` of the result is the sampling distribution.
    The input `scores` are not modified; a new tensor is returned.

    Args:
        codebook_size (`int`): number of code tokens, K; ids `>= K` are never sampled.
        temperature (`float`, *optional*, defaults to 1.0): > 0; below 1 sharpens the distribution, above 1 flattens it.
            A temperature so small that the scores overflow gives the limit, greedy sampling (ties split evenly).
        top_k (`int`, *optional*, defaults to 0): keep only the `top_k` most likely codes (0 ≤ top_k ≤ K); 0 is off.
        top_p (`float`, *optional*, defaults to 1.0): nucleus sampling mass in (0, 1]; 1.0 is off. The most likely
            code is always kept, so a vanishing `top_p` is greedy.

    The conventions (`top_k=0` and `top_p=1.0` mean off) are those of `transformers.GenerationConfig`, so the values
    stored in a prior's `generation_config.json` (`larp_hf.set_sampling_defaults`) build this processor unchanged:
    with `d = larp_hf.sampling_defaults(prior)`, `CodebookLogitsProcessor(K, d["temperature"], d["top_k"],
    d["top_p"])`. Stock `generate` applies those stored values itself; `LarpPipeline` applies them through this
    processor alone (its sampling loop, `sample_tokens`, has no warpers of its own), so each setting is applied once
    either way.

    Example:

    ```python
    >>> import torch
    >>> from larp_hf import CodebookLogitsProcessor
    >>> processor = CodebookLogitsProcessor(codebook_size=4, temperature=0.5, top_k=2)
    >>> scores = torch.tensor([[1.0, 3.0, 2.0, 0.0, 9.0, 9.0]])  # 4 codes, then BOS and a class token
    >>> processor(torch.zeros(1, 1, dtype=torch.long), scores)
    tensor([[-inf, 6., 4., -inf, -inf, -inf]])
    >>> scores  # unchanged
    tensor([[1., 3., 2., 0., 9., 9.]])
    ```
    """

    def __init__(self, codebook_size: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
        if not isinstance(codebook_size, int) or codebook_size < 1:
            raise ValueError(f"`codebook_size` must be a positive integer, got {codebook_size!r}.")
        if not _is_number(temperature) or not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(
                f"`temperature` must be a finite number > 0, got {temperature!r}. Use a small value (e.g. 0.1) for "
                "nearly greedy sampling."
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= codebook_size:
            raise ValueError(
                f"`top_k` must be an integer between 0 (off) and the codebook size ({codebook_size}), got {top_k!r}."
            )
        if not _is_number(top_p) or not 0 < top_p <= 1:
            raise ValueError(f"`top_p` must be a number in (0, 1] (1.0 = off), got {top_p!r}.")
        self.codebook_size = codebook_size
        self.temperature = float(temperature)
        self.top_k = top_k
        self.top_p = float(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] < self.codebook_size:
            raise ValueError(
                f"The scores have {scores.shape[-1]} entries per row, fewer than the codebook size "
                f"({self.codebook_size}): this processor belongs to a prior over a larger codebook."
            )
        codes = scores[:, : self.codebook_size] / self.temperature  # (B, K), a new tensor
        if self.temperature < 1:
            codes = self._sharpened_in_limit(scores[:, : self.codebook_size], codes)
        if 0 < self.top_k < self.codebook_size:
            kth_best = torch.topk(codes, self.top_k, dim=-1).values[:, -1:]  # (B, 1)
            codes = codes.masked_fill(codes < kth_best, float("-inf"))
        if self.top_p < 1:
            sorted_codes, order = torch.sort(codes, dim=-1, descending=True)
            probabilities = sorted_codes.softmax(dim=-1)
            # Drop a code when the codes ranked above it already hold `top_p` of the mass; the best one always stays.
            mass_before = probabilities.cumsum(dim=-1) - probabilities
            drop_sorted = mass_before >= self.top_p
            # A `top_p` below float32's smallest number compares as 0 and would drop even the best code: keep it, the
            # limit of a vanishing `top_p` is greedy.
            drop_sorted[:, 0] = False
            drop = drop_sorted.scatter(1, order, drop_sorted)
            codes = codes.masked_fill(drop, float("-inf"))
        specials = torch.full_like(scores[:, self.codebook_size :], float("-inf"))
        return torch.cat([codes, specials], dim=-1)

    def _sharpened_in_limit(self, codes: torch.Tensor, tempered: torch.Tensor) -> torch.Tensor:
        """
        `tempered` (= `codes / temperature`), except in rows where a tiny temperature overflowed a finite score to
        ±inf (softmax of inf - inf is NaN, which used to sample code 0): there `(codes - row max) / temperature` in
        float64, the same distribution, whose best code stays at 0 and the rest fall towards -inf, so the limit is
        greedy (ties split evenly) and top-k/top-p still apply.
        """
        overflowed = (torch.isinf(tempered) & torch.isfinite(codes)).any(dim=-1)  # (B,)
        if not bool(overflowed.any()):
            return tempered
        wide = codes.double()
        shifted = (wide - wide.amax(dim=-1, keepdim=True)) / self.temperature  # (B, K), <= 0, 0 at the best codes
        return torch.where(overflowed[:, None], shifted.to(tempered.dtype), tempered)

    def __repr__(self):
        return (
            f"{type(self).__name__}(codebook_size={self.codebook_size}, temperature={self.temperature}, "
            f"top_k={self.top_k}, top_p={self.top_p})"
        )


def image_generators(seed: int, first_index: int, count: int) -> list[torch.Generator]:
    """
    One CPU generator per image: image `i` of a request seeded with `seed` always gets the same stream, whatever the
    batch it falls in (`numpy.random.SeedSequence([seed, i])` spreads the seeds).
    """
    states = [np.random.SeedSequence([seed, first_index + i]).generate_state(2) for i in range(count)]
    return [torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1])) for state in states]


def gumbel_noise(generators: list[torch.Generator], num_steps: int, vocab_size: int) -> torch.DoubleTensor:
    """
    (B, num_steps, vocab_size) float64 Gumbel(0, 1) noise on the CPU, row b from `generators[b]`. A generator's
    stream is read in order, so one call for n steps gives the noise of n calls for one step each.
    """
    uniform = torch.stack([torch.rand(num_steps, vocab_size, generator=g, dtype=torch.float64) for g in generators])
    return uniform.clamp_(min=torch.finfo(torch.float64).tiny).log_().neg_().log_().neg_()  # -log(-log(u))


class PerImageSamplingLogitsProcessor(LogitsProcessor):
    r"""
    Draws each row's next token from that row's own random stream, so an image does not depend on the rest of its
    batch: keeps only `argmax(scores + g)` with Gumbel(0, 1) noise `g` from `generators[row]` (the Gumbel-max trick:
    an exact draw from `softmax(scores)`), every other token gets `-inf`. Put it last: `generate`'s own sampling then
    has a single token to pick. Returns a new tensor.

    Args:
        generators (`list[torch.Generator]`): one CPU generator per row of the batch (see `image_generators`).

    Example:

    ```python
    >>> import torch
    >>> from larp_hf.generation import PerImageSamplingLogitsProcessor, image_generators
    >>> scores = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    >>> first = PerImageSamplingLogitsProcessor(image_generators(seed=0, first_index=0, count=2))(None, scores)
    >>> alone = PerImageSamplingLogitsProcessor(image_generators(seed=0, first_index=1, count=1))(None, scores[1:])
    >>> bool(torch.equal(first[1:], alone))  # row 1 drew the same token in a batch of two as on its own
    True
    ```
    """

    def __init__(self, generators: list[torch.Generator]):
        self.generators = list(generators)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"The scores have {scores.shape[0]} rows but there are {len(self.generators)} generators.")
        gumbel = gumbel_noise(self.generators, 1, scores.shape[-1])[:, 0]  # (B, V)
        chosen = (scores.double() + gumbel.to(scores.device)).argmax(dim=-1, keepdim=True)  # (B, 1)
        kept = torch.full_like(scores, float("-inf"))
        return kept.scatter(1, chosen, 0.0)


__all__ = ["CodebookLogitsProcessor", "PerImageSamplingLogitsProcessor", "gumbel_noise", "image_generators"]
