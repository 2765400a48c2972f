"""Classifier-free guidance: one batched forward of 2B rows per step, one KV cache; and the checks on its scale."""

import math
import numbers

import torch
from transformers import LogitsProcessor, PreTrainedModel

from .decoding import sample_tokens


def sample_with_guidance(
    prior: PreTrainedModel,
    input_ids: torch.LongTensor,
    null_input_ids: torch.LongTensor,
    logits_processor: LogitsProcessor,
    guidance_scale: float,
    max_new_tokens: int,
    generators: list[torch.Generator] | None = None,
) -> torch.LongTensor:
    r"""
    Sample `max_new_tokens` tokens after `input_ids` with classifier-free guidance (Ho & Salimans, 2022).

    Each step runs the B conditional rows and the B null-class rows through the prior together (2B rows, one forward,
    one preallocated KV cache for all of them), mixes their next-token logits into
    `null + guidance_scale · (class − null)`, lets `logits_processor` (the sampling policy, e.g.
    `CodebookLogitsProcessor`) shape them and draws one token per row from their softmax, as `generate` does: from
    row b's own generator with `generators` (see `sample_tokens`), else from the global RNG. The same token is
    appended to both halves.

    Args:
        prior: a causal LM (`GPT2LMHeadModel` or any `*ForCausalLM`) in eval mode.
        input_ids: (B, P) prefixes that carry the class (e.g. `[BOS, class token]`).
        null_input_ids: (B, P) the same prefixes with the null class in place of the class.
        logits_processor: called as `logits_processor(sequences, scores)` on the guided (B, V) scores.
        guidance_scale: the scale s; 1 gives the conditional model's logits.
        max_new_tokens: tokens to sample.
        generators: one CPU `torch.Generator` per row (`image_generators`), or `None` for the global RNG.

    Returns:
        (B, max_new_tokens) sampled token ids.
    """
    return sample_tokens(
        prior, input_ids, logits_processor, max_new_tokens, generators=generators, null_input_ids=null_input_ids,
        guidance_scale=guidance_scale,
    )  # fmt: skip


def check_guidance_scale(guidance_scale, class_labels, num_classes: int) -> float:
    """
    `guidance_scale` (None = 1.0, no guidance) checked against the request: a finite number >= 1, and above 1 only
    when there is a class to steer towards, i.e. a class-conditional prior (`num_classes` > 0) sampling `class_labels`
    (class indices, or `None` for every class in turn) rather than `"null"`, its unconditional model. A `ValueError`
    says what is wrong.
    """
    guidance_scale = 1.0 if guidance_scale is None else guidance_scale
    is_number = isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool)
    if not is_number or not (math.isfinite(guidance_scale) and guidance_scale >= 1):
        raise ValueError(
            f"`guidance_scale` must be a finite number >= 1 (1 = no guidance), got {guidance_scale!r}. To sample from "
            'the unconditional model of a class-conditional prior, pass `class_labels="null"`.'
        )
    if guidance_scale > 1 and num_classes == 0:
        raise ValueError(
            "`guidance_scale` > 1 steers samples towards a class, but this prior is unconditional (trained without "
            "classes): leave `guidance_scale` at 1."
        )
    if guidance_scale > 1 and isinstance(class_labels, str):
        raise ValueError(
            f"`guidance_scale` > 1 steers samples towards `class_labels`, but {class_labels!r} is the null class, the "
            f"unconditional model: pass class labels (or leave them out for all {num_classes} classes in turn), or "
            "set `guidance_scale` to 1."
        )
    return float(guidance_scale)


__all__ = ["check_guidance_scale", "sample_with_guidance"]
