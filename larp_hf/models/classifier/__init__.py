from transformers import AutoConfig, AutoModel

from .configuration_larp_classifier import LarpClassifierConfig
from .modeling_larp_classifier import LarpClassifierModel


# The Auto classes load a saved classifier once this package is loaded (`import larp_hf` loads it with transformers).
AutoConfig.register(LarpClassifierConfig.model_type, LarpClassifierConfig, exist_ok=True)
AutoModel.register(LarpClassifierConfig, LarpClassifierModel, exist_ok=True)

__all__ = ["LarpClassifierConfig", "LarpClassifierModel"]
