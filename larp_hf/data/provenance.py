"""What a model was trained on: one small record that travels from the tokenizer to the token dataset, the prior and
the pipeline, so that the commands that follow default to the same data and say so.

Where the record lives (one home per kind of artefact, the same fields everywhere):

- a tokenizer, prior or classifier folder written by a recipe: `training_data.json` beside the weights
  (`DatasetRecord.save` / `DatasetRecord.from_folder`);
- a token dataset: the `dataset` entry of its metadata, inside the `input_ids` feature, which survives
  `save_to_disk`, parquet and `push_to_hub` (`larp_hf.data.token_dataset`);
- a pipeline folder: the `training_data` entry of `larp_pipeline.json`'s `model_card` (written by `larp-hf
  assemble` from the prior's record, else the tokenizer's), read back as `pipeline.card_info["training_data"]`.

When nothing is recorded, Fashion-MNIST is the default, and `choose_dataset` says so.
"""

import dataclasses
import json
import os
from pathlib import Path

import datasets

from ..atomic_files import write_json_atomic
from .loading import FASHION_MNIST_NAMES, first_image_size


TRAINING_DATA_FILE = "training_data.json"
PIPELINE_INDEX_FILE = "larp_pipeline.json"
DEFAULT_DATASET = "fashion_mnist"
# Channels of the PIL image modes datasets decodes to.
_MODE_CHANNELS = {
    "1": 1, "L": 1, "P": 3, "I": 1, "I;16": 1, "F": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "RGBA": 4, "CMYK": 4,
}  # fmt: skip


@dataclasses.dataclass
class DatasetRecord:
    """
    The image dataset a model was trained on, as `load_image_dataset` reads it again.

    Args:
        source: `"fashion_mnist"`, a Hub dataset id, or a local folder or file (recorded as an absolute path, so the
            record holds wherever the command that reads it runs).
        split: the split trained on (`None`: not one split, e.g. a token dataset that holds them all).
        image_column: the column the images were read from (`None`: found by `load_image_dataset`'s rules).
        label_column: the column the labels were read from (`None`: found by those rules, or no labels).
        class_names: the names of the classes in label order (`None`: no labels).
        image_size: `[height, width]` of the first training image, before any resizing.
        num_channels: channels of the first training image as stored (1 grey, 3 RGB, 4 RGBA, ...).
        data_dir: for `"fashion_mnist"`, the folder of its IDX files when one was given.
    """

    source: str
    split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    class_names: list[str] | None = None
    image_size: list[int] | None = None
    num_channels: int | None = None
    data_dir: str | None = None

    @classmethod
    def from_dataset(
        cls,
        source: str | os.PathLike,
        dataset: datasets.Dataset | datasets.IterableDataset,
        split: str | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        data_dir: str | os.PathLike | None = None,
    ) -> "DatasetRecord":
        """The record of `dataset`, loaded by `load_image_dataset(source, ...)` (its `image` and `label` columns)."""
        label = (dataset.features or {}).get("label")
        class_names = list(label.names) if isinstance(label, datasets.ClassLabel) else None
        image_size, num_channels = None, None
        if isinstance(dataset, datasets.IterableDataset) or len(dataset):
            image_size = list(first_image_size(dataset))
            num_channels = _first_image_channels(dataset)
        return cls(
            source=_portable_source(source),
            split=split,
            image_column=image_column,
            label_column=label_column,
            class_names=class_names,
            image_size=image_size,
            num_channels=num_channels,
            data_dir=None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
        )

    @classmethod
    def from_dict(cls, record: dict) -> "DatasetRecord":
        """A record from its JSON form; a field it does not know is refused (a newer larp_hf wrote it)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(record) - fields)
        if unknown or "source" not in record:
            raise ValueError(
                f"Not a larp_hf dataset record: {'unknown fields ' + str(unknown) if unknown else 'no `source`'}."
            )
        return cls(**record)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `folder/training_data.json` whole or not at all; returns its path."""
        path = Path(folder) / TRAINING_DATA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "DatasetRecord | None":
        """
        The record kept in a local folder: its `training_data.json` (a tokenizer, prior or classifier folder), else
        the `training_data` of a pipeline folder's `larp_pipeline.json`. `None` when there is none (or `folder` is
        not a local folder, e.g. a Hub id).
        """
        folder = Path(folder)
        path = folder / TRAINING_DATA_FILE
        if path.is_file():
            return cls.from_dict(json.loads(path.read_text()))
        index = folder / PIPELINE_INDEX_FILE
        if index.is_file():
            record = json.loads(index.read_text()).get("model_card", {}).get("training_data")
            return None if record is None else cls.from_dict(record)
        return None

    def describe(self) -> str:
        """One line for messages: the source, its split and columns, its classes."""
        parts = [f"split {self.split!r}"] if self.split else []
        if self.image_column:
            parts.append(f"images in {self.image_column!r}")
        if self.label_column:
            parts.append(f"labels in {self.label_column!r}")
        if self.class_names:
            names = ", ".join(self.class_names[:5]) + (", ..." if len(self.class_names) > 5 else "")
            parts.append(f"{len(self.class_names)} classes ({names})")
        return self.source + (f" ({'; '.join(parts)})" if parts else "")


@dataclasses.dataclass
class DatasetChoice:
    """What a command reads (`source`, `data_dir`, columns) and why (`reason`, for the message it prints)."""

    source: str
    data_dir: str | None
    image_column: str | None
    label_column: str | None
    reason: str
    record: DatasetRecord | None = None

    def message(self) -> str:
        return f"Dataset: {self.source} ({self.reason})"


def choose_dataset(
    dataset: str | None,
    record: DatasetRecord | None,
    recorded_by: str = "the tokenizer",
    image_column: str | None = None,
    label_column: str | None = None,
    data_dir: str | None = None,
) -> DatasetChoice:
    """
    The dataset a command reads: `dataset` when given; else the one `record` names (`recorded_by` says whose
    record, for the reason); else Fashion-MNIST, saying that nothing was recorded. Columns and `data_dir` given win;
    otherwise those of the record, when the source is the recorded one.
    """
    if dataset is not None:
        same = record is not None and _same_source(dataset, record.source)
        reason = "given"
        if record is not None and not same:
            reason = f"given; {recorded_by} was trained on {record.source}"
    elif record is not None:
        dataset, same, reason = record.source, True, f"from {recorded_by}'s record"
    else:
        dataset, same, reason = DEFAULT_DATASET, False, f"nothing recorded by {recorded_by}: Fashion-MNIST"
    if same:
        image_column = image_column if image_column is not None else record.image_column
        label_column = label_column if label_column is not None else record.label_column
        data_dir = data_dir if data_dir is not None else record.data_dir
    return DatasetChoice(dataset, data_dir, image_column, label_column, reason, record)


def _portable_source(source: str | os.PathLike) -> str:
    """Local paths become absolute (so a record holds from another working folder); names and Hub ids stay."""
    name = os.fspath(source)
    if name in FASHION_MNIST_NAMES:
        return DEFAULT_DATASET
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _same_source(a: str, b: str) -> bool:
    return _portable_source(a) == _portable_source(b)


def _first_image_channels(dataset) -> int | None:
    row = dataset[0] if isinstance(dataset, datasets.Dataset) else next(iter(dataset))
    image = row["image"]
    if isinstance(image, dict):  # undecoded
        image = datasets.Image().decode_example(image)
    mode = getattr(image, "mode", None)
    if mode is not None:
        return _MODE_CHANNELS.get(mode)
    shape = getattr(image, "shape", None)
    if shape is None:
        return None
    return 1 if len(shape) == 2 else int(min(shape[0], shape[-1]))


__all__ = ["DEFAULT_DATASET", "TRAINING_DATA_FILE", "DatasetChoice", "DatasetRecord", "choose_dataset"]
