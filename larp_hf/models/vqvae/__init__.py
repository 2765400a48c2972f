from .configuration_larp_vqvae import LarpVQVAEConfig
from .image_processing_larp_vqvae import LarpImageProcessor
from .modeling_larp_vqvae import LarpVectorQuantizer, LarpVQVAEModel, LarpVQVAEOutput, LarpVQVAEPreTrainedModel


__all__ = [
    "LarpImageProcessor",
    "LarpVQVAEConfig",
    "LarpVQVAEModel",
    "LarpVQVAEOutput",
    "LarpVQVAEPreTrainedModel",
    "LarpVectorQuantizer",
]
