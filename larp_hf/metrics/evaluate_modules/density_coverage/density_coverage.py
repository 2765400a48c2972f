"""`evaluate` module: density and coverage (Naeem et al., 2020) between two feature sets. Loads offline with
`evaluate.load(larp_hf.metrics.evaluate_module_path("density_coverage"))`."""

import datasets
import evaluate
import torch

from larp_hf.metrics import density_coverage


_DESCRIPTION = """
Density (how many real k-NN balls hold a generated sample, on average, over k) and coverage (fraction of real samples
whose k-NN ball holds a generated sample). Balls around real samples only, so outliers in the generated set do not
inflate them. Takes features.
"""
_CITATION = """@inproceedings{naeem2020reliable, title={Reliable Fidelity and Diversity Metrics for Generative Models},
author={Naeem, Muhammad Ferjad and Oh, Seong Joon and Uh, Youngjung and Choi, Yunjey and Yoo, Jaejun},
booktitle={ICML}, year={2020}}"""
_KWARGS_DESCRIPTION = """
Args:
    generated_features: (M, D) features of generated images.
    real_features: (N, D) features of real images (a `compute` argument).
    k: neighbourhood size, default 5.
Returns:
    density (>= 0, about 1 for matching distributions), coverage (in [0, 1]).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DensityCoverage(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"generated_features": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, generated_features, real_features, k=5):
        real = torch.as_tensor(real_features, dtype=torch.float64)
        return density_coverage(real, torch.as_tensor(generated_features, dtype=torch.float64), k=k)
