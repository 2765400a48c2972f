"""`evaluate` module: Fréchet distance (FID's formula) between two feature sets. Loads offline with
`evaluate.load(larp_hf.metrics.evaluate_module_path("frechet_distance"))`."""

import datasets
import evaluate
import torch

from larp_hf.metrics import frechet_distance


_DESCRIPTION = """
Fréchet distance between Gaussians fitted to real and generated features (FID when the features are Inception-v3's
pool3; name the feature network when they are not). Float64 statistics; the trace of the matrix square root comes from
the eigenvalues of Σ_real Σ_generated. Takes features, not images.
"""
_CITATION = """@inproceedings{heusel2017gans, title={GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium}, author={Heusel, Martin and Ramsauer, Hubert and Unterthiner, Thomas and Nessler, Bernhard and Hochreiter,
Sepp}, booktitle={NeurIPS}, year={2017}}"""
_KWARGS_DESCRIPTION = """
Args:
    generated_features: (M, D) features of generated images (accumulated with `add_batch` or passed to `compute`).
    real_features: (N, D) features of real images (a `compute` argument; N and M may differ).
Returns:
    frechet_distance: float.
Example:
    >>> fid = evaluate.load(larp_hf.metrics.evaluate_module_path("frechet_distance"))
    >>> fid.compute(generated_features=generated, real_features=real)
    {'frechet_distance': ...}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FrechetDistance(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"generated_features": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, generated_features, real_features):
        return {
            "frechet_distance": frechet_distance(
                torch.as_tensor(real_features, dtype=torch.float64), torch.as_tensor(generated_features, dtype=torch.float64)
            )
        }
