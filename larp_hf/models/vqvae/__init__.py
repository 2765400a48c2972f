from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .configuration_larp_vqvae import LarpVQVAEConfig
from .image_processing_larp_vqvae import LarpImageProcessor
from .modeling_larp_vqvae import LarpVectorQuantizer, LarpVQVAEModel, LarpVQVAEOutput, LarpVQVAEPreTrainedModel


# The Auto classes load a saved tokenizer once this package is loaded (`import larp_hf` loads it with transformers).
AutoConfig.register(LarpVQVAEConfig.model_type, LarpVQVAEConfig, exist_ok=True)
AutoModel.register(LarpVQVAEConfig, LarpVQVAEModel, exist_ok=True)
AutoImageProcessor.register(LarpVQVAEConfig, image_processor_classes={"torchvision": LarpImageProcessor}, exist_ok=True)

__all__ = [
    "LarpImageProcessor",
    "LarpVQVAEConfig",
    "LarpVQVAEModel",
    "LarpVQVAEOutput",
    "LarpVQVAEPreTrainedModel",
    "LarpVectorQuantizer",
]
