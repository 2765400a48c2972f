"""Sample-quality metrics in plain torch (`functional`), each also an `evaluate` module in `evaluate_modules/`."""

from pathlib import Path

from .functional import (
    MIN_TOTAL_VARIANCE,
    check_feature_spread,
    density_coverage,
    frechet_distance,
    nearest_neighbour_radii,
    precision_recall,
    top_k_accuracy,
    top_k_hits,
)


EVALUATE_MODULES = ("frechet_distance", "precision_recall", "density_coverage", "top_k_accuracy")


def evaluate_module_path(name: str) -> str:
    """
    Folder of one of our `evaluate` modules, for `evaluate.load(evaluate_module_path("frechet_distance"))` (works
    offline: nothing is downloaded).
    """
    if name not in EVALUATE_MODULES:
        raise ValueError(f"Unknown metric {name!r}; choose one of {EVALUATE_MODULES}.")
    return str(Path(__file__).parent / "evaluate_modules" / name)


__all__ = [
    "EVALUATE_MODULES",
    "MIN_TOTAL_VARIANCE",
    "check_feature_spread",
    "density_coverage",
    "evaluate_module_path",
    "frechet_distance",
    "nearest_neighbour_radii",
    "precision_recall",
    "top_k_accuracy",
    "top_k_hits",
]
