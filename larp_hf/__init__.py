"""larp_hf: latent-autoregressive image generation on the Hugging Face stack."""

from .auto_classes import register_when_transformers_loads
from .lazy_exports import lazy_exports


__version__ = "0.1.0.dev0"

# Imported from their modules when first used (`larp_hf.LarpPipeline` loads torch and transformers then), so that
# `import larp_hf` and `larp-hf --help` take a fraction of a second (bench/bench_import_time.py).
_EXPORTS = {
    "CodebookLogitsProcessor": ".generation",
    "ImageTokenizer": ".tokenizers",
    "LarpClassifierConfig": ".models.classifier",
    "LarpClassifierModel": ".models.classifier",
    "LarpImageProcessor": ".models.vqvae",
    "LarpPipeline": ".pipelines",
    "LarpPipelineOutput": ".pipelines",
    "LarpPriorCollator": ".data",
    "LarpVQVAEConfig": ".models.vqvae",
    "LarpVQVAEModel": ".models.vqvae",
    "LarpVQVAEOutput": ".models.vqvae",
    "LarpVQVAEPreTrainedModel": ".models.vqvae",
    "LarpVectorQuantizer": ".models.vqvae",
    "PRIOR_PRESETS": ".prior",
    "as_tokenizer": ".tokenizers",
    "check_pair": ".prior",
    "encode_dataset": ".data",
    "load_image_dataset": ".data",
    "load_tokenizer": ".tokenizers",
    "prior_config": ".prior",
    "prior_metadata": ".prior",
    "sampling_defaults": ".prior",
    "set_sampling_defaults": ".prior",
    "token_dataset_metadata": ".data",
    "wrap_tokenizer": ".tokenizers",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

# `import larp_hf` is all it takes for the Auto classes to load a saved tokenizer or classifier: they are registered
# with transformers now if it is loaded, else as soon as it is.
register_when_transformers_loads()

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
