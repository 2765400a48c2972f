"""larp_hf: latent-autoregressive image generation on the Hugging Face stack."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .data import load_image_dataset
from .models import (
    LarpImageProcessor,
    LarpVectorQuantizer,
    LarpVQVAEConfig,
    LarpVQVAEModel,
    LarpVQVAEOutput,
    LarpVQVAEPreTrainedModel,
)


__version__ = "0.1.0.dev0"

# `import larp_hf` is all it takes for the Auto classes to load a saved tokenizer.
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
    "load_image_dataset",
]
