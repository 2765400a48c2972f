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

from .feature_networks import FeatureNetwork, InceptionFeatureNetwork, RandomFeatureNetwork, load_feature_network
from .real_data import (
    cached_real_features,
    code_grid_batches,
    default_cache_dir,
    image_batch,
    real_image_dataset,
    token_batch_rows,
    training_token_split,
)
from .reports import (
    evaluation_markdown,
    record_evaluation_in_card,
    record_sweep_in_card,
    save_best_setting,
    sweep_markdown,
    sweep_plots,
    write_evaluation_reports,
    write_sweep_reports,
)
from .scores import (
    best_setting,
    encode_images,
    evaluate_pipeline,
    memorisation,
    memorisation_summary,
    nearest_hamming_distances,
    reconstruct,
    sample_scores,
    sweep_pipeline,
)


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
