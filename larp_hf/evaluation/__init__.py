"""
Judging a pipeline: sample scores on a feature network, the tokenizer's floor, a real-vs-real baseline, memorisation
in code space and sampling sweeps, for a pipeline over any `ImageTokenizer` (read through its members only: grid,
image size, channels, codebook size, hash; square or not). `larp-hf evaluate` and `larp-hf sweep` are thin shells over
these functions.

- `feature_networks`: the feature spaces (a domain classifier, Inception-v3, a fixed random network for unlabelled
  data offline).
- `real_data`: real images of a split, their cached features, training code grids (all read in batches).
- `scores`: `evaluate_pipeline`, `sweep_pipeline` and the scores they are made of (plain dicts).
- `processes`: sharing the work out across processes (`accelerate launch`) and gathering it back.
- `reports`: tables, files, plots and model-card records of those results.
"""

from ..lazy_exports import lazy_exports


# Imported from their modules when first used (see larp_hf/lazy_exports.py).
_EXPORTS = {
    "FeatureNetwork": ".feature_networks",
    "InceptionFeatureNetwork": ".feature_networks",
    "RandomFeatureNetwork": ".feature_networks",
    "best_setting": ".scores",
    "cached_real_features": ".real_data",
    "code_grid_batches": ".real_data",
    "default_cache_dir": ".real_data",
    "encode_images": ".scores",
    "evaluate_pipeline": ".scores",
    "evaluation_markdown": ".reports",
    "image_batch": ".real_data",
    "load_feature_network": ".feature_networks",
    "memorisation": ".scores",
    "memorisation_summary": ".scores",
    "nearest_hamming_distances": ".scores",
    "real_image_dataset": ".real_data",
    "reconstruct": ".scores",
    "record_evaluation_in_card": ".reports",
    "record_sweep_in_card": ".reports",
    "sample_scores": ".scores",
    "save_best_setting": ".reports",
    "sweep_markdown": ".reports",
    "sweep_pipeline": ".scores",
    "sweep_plots": ".reports",
    "token_batch_rows": ".real_data",
    "training_token_split": ".real_data",
    "write_evaluation_reports": ".reports",
    "write_sweep_reports": ".reports",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "FeatureNetwork",
    "InceptionFeatureNetwork",
    "RandomFeatureNetwork",
    "best_setting",
    "cached_real_features",
    "code_grid_batches",
    "default_cache_dir",
    "encode_images",
    "evaluate_pipeline",
    "evaluation_markdown",
    "image_batch",
    "load_feature_network",
    "memorisation",
    "memorisation_summary",
    "nearest_hamming_distances",
    "real_image_dataset",
    "reconstruct",
    "record_evaluation_in_card",
    "record_sweep_in_card",
    "sample_scores",
    "save_best_setting",
    "sweep_markdown",
    "sweep_pipeline",
    "sweep_plots",
    "token_batch_rows",
    "training_token_split",
    "write_evaluation_reports",
    "write_sweep_reports",
]
