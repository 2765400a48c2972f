from .configuration_larp_classifier import LarpClassifierConfig
from .modeling_larp_classifier import LarpClassifierModel


__all__ = ["LarpClassifierConfig", "LarpClassifierModel"]
