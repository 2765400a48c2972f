"""larp_hf: latent-autoregressive image generation on the Hugging Face stack."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .generation import CodebookLogitsProcessor
from .data import LarpPriorCollator, encode_dataset, load_image_dataset, token_dataset_metadata
from .models import (
    LarpImageProcessor,
    LarpVectorQuantizer,
    LarpVQVAEConfig,
    LarpVQVAEModel,
    LarpVQVAEOutput,
    LarpVQVAEPreTrainedModel,
)
from .models.classifier import LarpClassifierConfig, LarpClassifierModel
from .pipelines import LarpPipeline, LarpPipelineOutput
from .tokenizers import ImageTokenizer, as_tokenizer, load_tokenizer, wrap_tokenizer
from .prior import PRIOR_PRESETS, check_pair, prior_config, prior_metadata, sampling_defaults, set_sampling_defaults


__version__ = "0.1.0.dev0"

# `import larp_hf` is all it takes for the Auto classes to load a saved tokenizer.
AutoConfig.register(LarpVQVAEConfig.model_type, LarpVQVAEConfig, exist_ok=True)
AutoModel.register(LarpVQVAEConfig, LarpVQVAEModel, exist_ok=True)
AutoConfig.register(LarpClassifierConfig.model_type, LarpClassifierConfig, exist_ok=True)
AutoModel.register(LarpClassifierConfig, LarpClassifierModel, exist_ok=True)
AutoImageProcessor.register(LarpVQVAEConfig, image_processor_classes={"torchvision": LarpImageProcessor}, exist_ok=True)

__all__ = [
    "PRIOR_PRESETS",
    "CodebookLogitsProcessor",
    "ImageTokenizer",
    "LarpClassifierConfig",
    "LarpClassifierModel",
    "LarpPipeline",
    "LarpPipelineOutput",
    "LarpImageProcessor",
    "LarpPriorCollator",
    "LarpVQVAEConfig",
    "LarpVQVAEModel",
    "LarpVQVAEOutput",
    "LarpVQVAEPreTrainedModel",
    "LarpVectorQuantizer",
    "as_tokenizer",
    "check_pair",
    "encode_dataset",
    "load_image_dataset",
    "load_tokenizer",
    "prior_config",
    "prior_metadata",
    "sampling_defaults",
    "set_sampling_defaults",
    "token_dataset_metadata",
    "wrap_tokenizer",
]
