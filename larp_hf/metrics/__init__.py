from .functional import density_coverage, frechet_distance, nearest_neighbour_radii, precision_recall, top_k_accuracy


__all__ = ["density_coverage", "frechet_distance", "nearest_neighbour_radii", "precision_recall", "top_k_accuracy"]
