from .guidance import sample_with_guidance
from .logits_process import CodebookLogitsProcessor


__all__ = ["CodebookLogitsProcessor", "sample_with_guidance"]
