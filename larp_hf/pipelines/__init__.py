from .folder import PIPELINE_CONFIG_NAME, is_pipeline_folder
from .image_grid import image_grid, to_pil_images
from .model_card import card_info_from_training_runs, hub_dataset_id, pipeline_model_card
from .pipeline_larp import LarpPipeline, LarpPipelineOutput
from .samples import SavedSamples, save_samples


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
