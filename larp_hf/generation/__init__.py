from .guidance import check_guidance_scale, sample_with_guidance
from .logits_process import CodebookLogitsProcessor


__all__ = ["CodebookLogitsProcessor", "check_guidance_scale", "sample_with_guidance"]
