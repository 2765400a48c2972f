from .logits_process import CodebookLogitsProcessor


__all__ = ["CodebookLogitsProcessor"]
