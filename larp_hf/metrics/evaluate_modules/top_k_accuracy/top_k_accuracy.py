"""`evaluate` module: top-k accuracy of next-token predictions (the prior's). Loads offline with
`evaluate.load(larp_hf.metrics.evaluate_module_path("top_k_accuracy"))`."""

import datasets
import evaluate
import torch

from larp_hf.metrics import top_k_accuracy


_DESCRIPTION = """
Fraction of positions whose reference token is among the k highest logits. Cross-entropy alone hides how often the
right code is at least a likely one; top-5/top-10 accuracy shows it.
"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: one row of logits (vocabulary scores) per position.
    references: the true token id per position; -100 positions are skipped.
    k: default 5.
Returns:
    top_k_accuracy: float in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=5):
        logits = torch.as_tensor(predictions, dtype=torch.float32)
        return {"top_k_accuracy": top_k_accuracy(logits, torch.as_tensor(references), k=k)}
