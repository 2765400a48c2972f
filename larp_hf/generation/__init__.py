from .decoding import PreallocatedLayer, preallocated_cache, sample_tokens
from .guidance import check_guidance_scale, guided_logits, resolve_guidance_scale, with_null_rows
from .logits_process import CodebookLogitsProcessor, PerImageSamplingLogitsProcessor, gumbel_noise, image_generators


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
