from .decoding import PreallocatedLayer, preallocated_cache, sample_tokens
from .guidance import check_guidance_scale, sample_with_guidance
from .logits_process import CodebookLogitsProcessor, PerImageSamplingLogitsProcessor, gumbel_noise, image_generators


__all__ = [
    "CodebookLogitsProcessor",
    "PerImageSamplingLogitsProcessor",
    "PreallocatedLayer",
    "check_guidance_scale",
    "gumbel_noise",
    "image_generators",
    "preallocated_cache",
    "sample_tokens",
    "sample_with_guidance",
]
