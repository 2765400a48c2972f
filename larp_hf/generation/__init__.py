from ..lazy_exports import lazy_exports


# Imported from their modules when first used (see larp_hf/lazy_exports.py).
_EXPORTS = {
    "CodebookLogitsProcessor": ".logits_process",
    "PerImageSamplingLogitsProcessor": ".logits_process",
    "PreallocatedLayer": ".decoding",
    "check_guidance_scale": ".guidance",
    "guided_logits": ".guidance",
    "gumbel_noise": ".logits_process",
    "image_generators": ".logits_process",
    "preallocated_cache": ".decoding",
    "resolve_guidance_scale": ".guidance",
    "sample_tokens": ".decoding",
    "with_null_rows": ".guidance",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "CodebookLogitsProcessor",
    "PerImageSamplingLogitsProcessor",
    "PreallocatedLayer",
    "check_guidance_scale",
    "guided_logits",
    "gumbel_noise",
    "image_generators",
    "preallocated_cache",
    "resolve_guidance_scale",
    "sample_tokens",
    "with_null_rows",
]
