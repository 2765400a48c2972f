from .guidance import check_guidance_scale, sample_with_guidance
from .logits_process import CodebookLogitsProcessor, PerImageSamplingLogitsProcessor, image_generators


__all__ = [
    "CodebookLogitsProcessor",
    "PerImageSamplingLogitsProcessor",
    "check_guidance_scale",
    "image_generators",
    "sample_with_guidance",
]
