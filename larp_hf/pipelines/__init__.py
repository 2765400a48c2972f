from ..lazy_exports import lazy_exports

# Not lazy: the function has its module's name, and an import of the module (`larp_hf.pipelines.image_grid`) would
# otherwise leave the module where the function should be.
from .image_grid import image_grid, to_pil_images


# Imported from their modules when first used (see larp_hf/lazy_exports.py).
_EXPORTS = {
    "LarpPipeline": ".pipeline_larp",
    "LarpPipelineOutput": ".pipeline_larp",
    "PIPELINE_CONFIG_NAME": ".folder",
    "SavedSamples": ".samples",
    "card_info_from_training_runs": ".model_card",
    "hub_dataset_id": ".model_card",
    "is_pipeline_folder": ".folder",
    "pipeline_model_card": ".model_card",
    "save_samples": ".samples",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "PIPELINE_CONFIG_NAME",
    "LarpPipeline",
    "LarpPipelineOutput",
    "SavedSamples",
    "card_info_from_training_runs",
    "hub_dataset_id",
    "image_grid",
    "is_pipeline_folder",
    "pipeline_model_card",
    "save_samples",
    "to_pil_images",
]
