"""
Classifier-free guidance (Ho & Salimans, 2022), all of it: the checks on its scale, the scale a request samples with,
the batch of class rows followed by their null-class rows that one forward runs, and the mixing of their logits.
`LarpPipeline` and the sampling loop (`sample_tokens`) call these; the null-class prefix itself is
`larp_hf.prior.null_prefix_ids`.
"""

import math
import numbers

import torch


# The largest float32: the logits are float32, so a larger scale could only ever multiply them into infinities.
MAX_GUIDANCE_SCALE = float(torch.finfo(torch.float32).max)

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
    if guidance_scale > MAX_GUIDANCE_SCALE:
        raise ValueError(
            f"`guidance_scale` {guidance_scale:g} is beyond float32's range ({MAX_GUIDANCE_SCALE:.3g}), in which the "
            "logits are mixed: use a smaller scale (scales in the thousands already sample almost greedily)."
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


def resolve_guidance_scale(guidance_scale, class_labels, num_classes: int, stored_scale: float) -> float:
    """
    The scale a request samples with, checked by `check_guidance_scale`: `guidance_scale`, or when it is `None` the
    prior's `stored_scale` (`larp_hf.sampling_defaults(prior)["guidance_scale"]`) for class labels, and 1 (none) for
    the null class and for unconditional priors, which have nothing to steer towards.
    """
    if guidance_scale is None:
        null_class = isinstance(class_labels, str)  # `class_labels="null"`, as in check_guidance_scale
        guidance_scale = stored_scale if num_classes > 0 and not null_class else 1.0
    return check_guidance_scale(guidance_scale, class_labels, num_classes)


def with_null_rows(input_ids: torch.Tensor, null_input_ids: torch.Tensor) -> torch.Tensor:
    """
    (2B, ...): the B class rows of `input_ids`, then the B rows of `null_input_ids` (the same sequences with the null
    class, see `larp_hf.prior.null_prefix_ids`), so that one forward of the prior runs both halves of a guided step;
    `guided_logits` mixes its output back into B rows.
    """
    if null_input_ids.shape != input_ids.shape:
        raise ValueError(
            f"`input_ids` {tuple(input_ids.shape)} and `null_input_ids` {tuple(null_input_ids.shape)} must have the "
            "same shape: one null-class prefix per conditional prefix."
        )
    return torch.cat([input_ids, null_input_ids])


def guided_logits(logits: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """
    (2B, V) logits of `with_null_rows` rows -> (B, V) guided logits `null + guidance_scale · (class − null)`: the
    conditional model's at scale 1, pushed away from the unconditional model's above it. Float32 logits come back
    float32, unless the mix overflows float32 (a scale in the 1e30s and up): then the rows are float64, exact.

    Example:

    ```python
    >>> import torch
    >>> from larp_hf.generation import guided_logits
    >>> guided_logits(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), guidance_scale=3.0)  # a class row, then its null row
    tensor([[ 4., -2.]])
    ```
    """
    if logits.shape[0] % 2:
        raise ValueError(f"Guided logits come in class and null-class halves; got an odd {logits.shape[0]} rows.")
    batch_size = logits.shape[0] // 2
    conditional, null = logits[:batch_size], logits[batch_size:]
    guided = null + guidance_scale * (conditional - null)
    overflowed = (~torch.isfinite(guided) & torch.isfinite(conditional) & torch.isfinite(null)).any(dim=-1)  # (B,)
    if bool(overflowed.any()):
        # A huge scale pushes finite float32 logits to ±inf (and 0 · inf to NaN), whose softmax is NaN: mix those
        # rows in float64 instead, which holds any scale up to MAX_GUIDANCE_SCALE times any float32 difference.
        wide = null.double() + guidance_scale * (conditional.double() - null.double())
        return torch.where(overflowed[:, None], wide, guided.double())
    return guided


__all__ = ["MAX_GUIDANCE_SCALE", "check_guidance_scale", "guided_logits", "resolve_guidance_scale", "with_null_rows"]
