"""Classifier-free guidance as an explicit decoding loop: one batched forward of 2B rows per step, one KV cache."""

import math
import numbers

import torch
from transformers import LogitsProcessor, PreTrainedModel


@torch.no_grad()
def sample_with_guidance(
    prior: PreTrainedModel,
    input_ids: torch.LongTensor,
    null_input_ids: torch.LongTensor,
    logits_processor: LogitsProcessor,
    guidance_scale: float,
    max_new_tokens: int,
) -> torch.LongTensor:
    r"""
    Sample `max_new_tokens` tokens after `input_ids` with classifier-free guidance (Ho & Salimans, 2022).

    Each step runs the B conditional rows and the B null-class rows through the prior together (2B rows, one forward,
    one KV cache for all of them), mixes their next-token logits into `null + guidance_scale · (class − null)`, lets
    `logits_processor` (the sampling policy: `CodebookLogitsProcessor`, and `PerImageSamplingLogitsProcessor` for
    per-image random streams) shape them and draws one token per row from their softmax, as `generate` does. The same
    token is appended to both halves. Only public model outputs are used (`logits` and the `past_key_values` a forward
    returns), so this loop does not depend on `generate`'s internals.

    Args:
        prior: a causal LM (`GPT2LMHeadModel` or any `*ForCausalLM`) in eval mode.
        input_ids: (B, P) prefixes that carry the class (e.g. `[BOS, class token]`).
        null_input_ids: (B, P) the same prefixes with the null class in place of the class.
        logits_processor: called as `logits_processor(sequences, scores)` on the guided (B, V) scores.
        guidance_scale: the scale s; 1 gives the conditional model's logits.
        max_new_tokens: tokens to sample.

    Returns:
        (B, max_new_tokens) sampled token ids.
    """
    if input_ids.shape != null_input_ids.shape:
        raise ValueError(
            f"`input_ids` {tuple(input_ids.shape)} and `null_input_ids` {tuple(null_input_ids.shape)} must have the "
            "same shape: one null-class prefix per conditional prefix."
        )
    batch_size, prefix_length = input_ids.shape
    sequences = input_ids  # (B, P + t): what the processor sees, as in generate
    step_ids = torch.cat([input_ids, null_input_ids])  # (2B, P) first, then (2B, 1) per step
    past_key_values = None
    for _ in range(max_new_tokens):
        outputs = prior(input_ids=step_ids, past_key_values=past_key_values, use_cache=True)
        past_key_values = outputs.past_key_values
        logits = outputs.logits[:, -1].float()  # (2B, V)
        conditional, null = logits[:batch_size], logits[batch_size:]
        scores = logits_processor(sequences, null + guidance_scale * (conditional - null))  # (B, V)
        next_tokens = torch.multinomial(scores.softmax(dim=-1), num_samples=1)  # (B, 1)
        sequences = torch.cat([sequences, next_tokens], dim=1)
        step_ids = torch.cat([next_tokens, next_tokens])  # (2B, 1)
    return sequences[:, prefix_length:]


def check_guidance_scale(guidance_scale, class_labels, num_classes: int) -> float:
    """`guidance_scale` (None = 1.0, no guidance) checked against the request; a `ValueError` says what is wrong."""
    guidance_scale = 1.0 if guidance_scale is None else guidance_scale
    is_number = isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool)
    if not is_number or not (math.isfinite(guidance_scale) and guidance_scale >= 1):
        raise ValueError(
            f"`guidance_scale` must be a finite number >= 1 (1 = no guidance), got {guidance_scale!r}. To sample from "
            "the unconditional model, leave `class_labels` out."
        )
    if guidance_scale > 1 and class_labels is None:
        raise ValueError(
            f"`guidance_scale` > 1 steers samples towards `class_labels`; pass `class_labels` (this prior has "
            f"{num_classes} classes)."
        )
    return float(guidance_scale)


__all__ = ["check_guidance_scale", "sample_with_guidance"]
