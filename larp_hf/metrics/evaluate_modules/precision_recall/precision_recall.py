"""`evaluate` module: improved precision and recall (Kynkäänniemi et al., 2019) between two feature sets. Loads
offline with `evaluate.load(larp_hf.metrics.evaluate_module_path("precision_recall"))`."""

import datasets
import evaluate
import torch

from larp_hf.metrics import precision_recall


_DESCRIPTION = """
Improved precision (fraction of generated samples inside the real manifold) and recall (fraction of real samples inside
the generated manifold); each manifold is the union of balls reaching each sample's k-th nearest neighbour in its own
set (the sample itself not counted), membership with `<=`. Distances are computed in chunks. Takes features.
"""
_CITATION = """@inproceedings{kynkaanniemi2019improved, title={Improved Precision and Recall Metric for Assessing
Generative Models}, author={Kynk{\\"a}{\\"a}nniemi, Tuomas and Karras, Tero and Laine, Samuli and Lehtinen, Jaakko and
Aila, Timo}, booktitle={NeurIPS}, year={2019}}"""
_KWARGS_DESCRIPTION = """
Args:
    generated_features: (M, D) features of generated images.
    real_features: (N, D) features of real images (a `compute` argument).
    k: neighbourhood size, default 3.
Returns:
    precision, recall: floats in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PrecisionRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"generated_features": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, generated_features, real_features, k=3):
        real = torch.as_tensor(real_features, dtype=torch.float64)
        return precision_recall(real, torch.as_tensor(generated_features, dtype=torch.float64), k=k)
