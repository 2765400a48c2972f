"""The evaluation results on a saved pipeline's model card: list them, remove some or all.

A pipeline folder keeps its results twice: as records in `larp_pipeline.json` (`model_card.evaluations`, with
everything they were measured with) and, rendered from them, as the model-index entries of `README.md`'s metadata and
its "## Evaluation" table. Removing results rewrites the records, the model-index and that section; the rest of the
card (other metadata, text a user added) is kept as it is. To replace a result, remove it and score again
(`larp-hf evaluate` / `sweep`, which record in the card); an evaluation with the same command, data, feature network,
sample count and sampling settings replaces its earlier record by itself.
"""

import json
import os
import re
from pathlib import Path

from huggingface_hub import ModelCard

from ..atomic_files import write_json_atomic, write_text_atomic
from .folder import PIPELINE_CONFIG_NAME, update_pipeline_manifest
from .model_card import MODEL_NAME, card_lock, dataset_source, eval_results, evaluation_section, same_dataset


CARD_NAME = "README.md"
# The card's evaluation section: from its heading to the next heading of the same level (or the end).
_EVALUATION_SECTION = re.compile(r"^## Evaluation[ \t]*\n.*?(?=^## |\Z)", flags=re.MULTILINE | re.DOTALL)


def _read_index(folder: Path) -> dict:
    index_path = folder / PIPELINE_CONFIG_NAME
    if not index_path.is_file():
        raise ValueError(
            f"{folder} is not a local LarpPipeline folder (it has no {PIPELINE_CONFIG_NAME}): card results are edited "
            "in a saved pipeline folder; download a Hub pipeline first (`huggingface-cli download REPO --local-dir "
            "DIR`) and upload it again afterwards."
        )
    return json.loads(index_path.read_text())


def training_dataset(folder: str | os.PathLike) -> str | None:
    """The dataset the pipeline in `folder` records as its training data (its card's `dataset`), or `None`."""
    return dataset_source((_read_index(Path(folder)).get("model_card") or {}).get("dataset"))


def card_results(folder: str | os.PathLike) -> list[dict]:
    """
    The evaluation records on the card of the pipeline saved in `folder`, in the card's order: result #1 first (the
    numbers `remove_card_results` takes). Each is an `evaluation_record` dict: `command`, `scores`, `dataset`,
    `split`, `num_samples`, `feature_network`, `feature_network_sha256`, `sampling`.
    """
    return list((_read_index(Path(folder)).get("model_card") or {}).get("evaluations") or [])


def remove_card_results(
    folder: str | os.PathLike, results: list[int | str] | None = None, *, remove_all: bool = False
) -> list[dict]:
    """
    Remove evaluation results from the card of the pipeline saved in `folder` and return the removed records.

    Args:
        folder: a pipeline folder (`LarpPipeline.save_pretrained`, `larp-hf assemble`).
        results: which to remove: result numbers as `card_results` counts them (1 is the first), and/or dataset names
            (every result whose real images came from that dataset; `fashion_mnist` and its Hub id are one dataset).
        remove_all: remove every result.

    `larp_pipeline.json` and `README.md` are each written whole or not at all; the card's model-index and "##
    Evaluation" section are rendered again from the records kept, the rest of `README.md` is left as it was. A
    number or dataset the card does not hold raises a `ValueError` listing what it holds, before anything is written.
    """
    folder = Path(folder)
    _read_index(folder)  # a folder without a pipeline is refused before a lock file is made in it
    # Under the card's lock, as every card writer: a record another command adds meanwhile is neither lost nor revived.
    with card_lock(folder):
        return _remove_card_results(folder, results, remove_all)


def _remove_card_results(folder: Path, results, remove_all: bool) -> list[dict]:
    index = _read_index(folder)
    if (results is None or len(results) == 0) == (not remove_all):
        raise ValueError("Name the results to remove (`results`: numbers or dataset names) or pass `remove_all`, "
                         "one of the two.")  # fmt: skip
    card_info = dict(index.get("model_card") or {})
    evaluations = list(card_info.get("evaluations") or [])
    removed_numbers = set(range(1, len(evaluations) + 1)) if remove_all else set()
    for which in results or []:
        if isinstance(which, bool) or not isinstance(which, (int, str)):
            raise ValueError(f"`results` holds {which!r}; give result numbers (ints) or dataset names (strings).")
        if isinstance(which, int):
            if not 1 <= which <= len(evaluations):
                held = f"results #1…#{len(evaluations)}" if evaluations else "no results"
                raise ValueError(f"`results` names result #{which}, but the card of {folder} holds {held}.")
            removed_numbers.add(which)
            continue
        matches = {number for number, record in enumerate(evaluations, 1) if same_dataset(record["dataset"], which)}
        if not matches:
            datasets = sorted({record["dataset"] for record in evaluations})
            held = f"results on {', '.join(map(repr, datasets))}" if datasets else "no results"
            raise ValueError(f"`results` names the dataset {which!r}, but the card of {folder} holds {held}.")
        removed_numbers |= matches
    removed = [record for number, record in enumerate(evaluations, 1) if number in removed_numbers]
    kept = [record for number, record in enumerate(evaluations, 1) if number not in removed_numbers]
    if not removed:
        return []
    write_json_atomic(folder / PIPELINE_CONFIG_NAME, {**index, "model_card": {**card_info, "evaluations": kept}})
    update_pipeline_manifest(folder, [PIPELINE_CONFIG_NAME])  # the folder still verifies (the card is not listed)
    if (folder / CARD_NAME).is_file():
        write_text_atomic(folder / CARD_NAME, _card_with_results(folder / CARD_NAME, kept, card_info.get("dataset")))
    return removed


def _card_with_results(card_path: Path, evaluations: list[dict], dataset) -> str:
    """The card at `card_path` with its model-index and evaluation section rendered from `evaluations`."""
    card = ModelCard.load(card_path)
    training = dataset_source(dataset)
    card.data.eval_results = eval_results(evaluations, training) or None
    if card.data.eval_results and not card.data.model_name:
        card.data.model_name = MODEL_NAME  # the Hub's model-index needs a name
    if not card.data.eval_results and card.data.model_name == MODEL_NAME:
        card.data.model_name = None  # ours named the model-index alone: without results it would stand as metadata
    lines = evaluation_section(evaluations, training)
    section = "\n".join(lines) + "\n" if lines else ""
    text, found = _EVALUATION_SECTION.subn(lambda _: section, card.text, count=1)
    if not found and section:  # a card whose section was edited away gets it back at the end
        text = text.rstrip("\n") + "\n\n" + section
    card.text = text
    return str(card)


__all__ = ["CARD_NAME", "card_results", "remove_card_results", "training_dataset"]
