from .vqvae import (
    LarpImageProcessor,
    LarpVectorQuantizer,
    LarpVQVAEConfig,
    LarpVQVAEModel,
    LarpVQVAEOutput,
    LarpVQVAEPreTrainedModel,
)


__all__ = [
    "LarpImageProcessor",
    "LarpVQVAEConfig",
    "LarpVQVAEModel",
    "LarpVQVAEOutput",
    "LarpVQVAEPreTrainedModel",
    "LarpVectorQuantizer",
]
