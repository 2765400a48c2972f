"""Token datasets as Hub artefacts: the tokenizer's identity travels inside the features, loading takes any source,
and every token dataset is checked before a prior trains on it or an evaluation reads it.

The metadata (tokenizer hash, grid, codebook size, flips and the vocabulary layout a prior gives the codes) is JSON in
the `id` of the code column's value feature. `datasets` keeps feature ids through `save_to_disk`, `map`/`select`, the
parquet schema (`to_parquet`, `push_to_hub` shards) and the dataset card's `dataset_info`, so no side file is needed.
"""

import json
import os
from pathlib import Path

import datasets
import numpy as np

from ..prior import vocabulary_layout


METADATA_KEY = "larp_token_dataset"
CODE_COLUMNS = ("input_ids", "input_ids_flipped")
_LOADERS_BY_SUFFIX = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def smallest_code_dtype(codebook_size: int) -> str:
    """The narrowest unsigned integer type that holds every code."""
    if codebook_size <= 2**8:
        return "uint8"
    if codebook_size <= 2**16:
        return "uint16"
    return "uint32"


def code_feature(metadata: dict) -> datasets.List:
    """The feature of a code column: `grid_size²` unsigned integers whose value feature carries `metadata` in its id."""
    value = datasets.Value(smallest_code_dtype(metadata["codebook_size"]), id=json.dumps({METADATA_KEY: metadata}))
    return datasets.List(value, length=metadata["grid_size"] ** 2)


def make_metadata(tokenizer_hash: str, grid_size: int, codebook_size: int, flip_augment: bool) -> dict:
    """
    What a token dataset records about the tokenizer that made it, and the token ids a prior gives its codes and
    prefix (`larp_hf.prior.vocabulary_layout`).
    """
    # The ids a class-conditional prior gives its tokens (BOS and class 0 do not depend on the number of classes).
    layout = vocabulary_layout(codebook_size, grid_size, num_classes=1)
    return {
        "tokenizer_hash": tokenizer_hash,
        "grid_size": grid_size,
        "codebook_size": codebook_size,
        "flip_augment": flip_augment,
        "vocabulary": {
            "codes": [0, layout["codebook_size"]],
            "bos_token_id": layout["bos_token_id"],
            "class_token_offset": layout["class_token_offset"],
        },
    }


def token_dataset_metadata(dataset: datasets.Dataset | datasets.IterableDataset) -> dict:
    """What `encode_dataset` recorded: tokenizer hash, grid size, codebook size, flips. Clear error when absent."""
    feature = (dataset.features or {}).get("input_ids")
    value = getattr(feature, "feature", None)
    if getattr(value, "id", None):
        try:
            return json.loads(value.id)[METADATA_KEY]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    try:  # token datasets written before the metadata moved into the features
        return json.loads(dataset.info.description or "{}")[METADATA_KEY]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(
            "This dataset carries no larp_hf token-dataset metadata (tokenizer hash, grid, codebook size in the "
            "`input_ids` feature): make token datasets with larp_hf.data.encode_dataset or recipes/encode_dataset.py."
        ) from None


def _is_saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def load_token_dataset(
    path_or_repo_id: str | os.PathLike, revision: str | None = None, streaming: bool = False, **load_kwargs
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """
    A token dataset from anywhere `datasets` reads: a `save_to_disk` folder, a Hub dataset id, a folder of parquet
    (or arrow/json/csv) files, or one such file. Always a `DatasetDict` (one `train` split for a single file or
    `Dataset`); each split's metadata is checked to be there (`token_dataset_metadata`).
    """
    path = Path(path_or_repo_id)
    if path.is_dir() and _is_saved_to_disk(path):
        splits = datasets.load_from_disk(str(path))
        if streaming:
            splits = (
                datasets.IterableDatasetDict({name: split.to_iterable_dataset() for name, split in splits.items()})
                if isinstance(splits, datasets.DatasetDict)
                else splits.to_iterable_dataset()
            )
    elif path.is_file() and path.suffix in _LOADERS_BY_SUFFIX:
        splits = datasets.load_dataset(
            _LOADERS_BY_SUFFIX[path.suffix], data_files=str(path), streaming=streaming, **load_kwargs
        )
    else:
        splits = datasets.load_dataset(str(path_or_repo_id), revision=revision, streaming=streaming, **load_kwargs)
    if isinstance(splits, (datasets.Dataset, datasets.IterableDataset)):
        splits = (datasets.IterableDatasetDict if streaming else datasets.DatasetDict)({"train": splits})
    for name, split in splits.items():
        try:
            token_dataset_metadata(split)
        except ValueError as error:
            raise ValueError(f"{path_or_repo_id} ({name} split): {error}") from None
    return splits


def check_token_dataset(
    dataset: datasets.Dataset,
    *,
    tokenizer_hash: str | None = None,
    grid_size: int | None = None,
    codebook_size: int | None = None,
    num_classes: int | None = None,
    name: str = "the token dataset",
    batch_size: int = 65536,
):
    """
    Refuse a token dataset a prior must not train on, with a `ValueError` that names `name` and the problem: made by
    another tokenizer (`tokenizer_hash`), sequences that are not `grid_size²` codes long, codes outside
    `[0, codebook_size)`, or (with `num_classes`) labels outside `[0, num_classes)`. Reads the columns in batches of
    `batch_size` rows, so memory does not grow with the dataset.
    """
    metadata = token_dataset_metadata(dataset)
    if tokenizer_hash is not None and metadata["tokenizer_hash"] != tokenizer_hash:
        raise ValueError(
            f"{name} was made by tokenizer {metadata['tokenizer_hash'][:12]}…, but the tokenizer here is "
            f"{tokenizer_hash[:12]}…: its codes mean something else. Re-encode the images with this tokenizer "
            "(recipes/encode_dataset.py) or use the tokenizer that made it."
        )
    for key, expected in (("grid_size", grid_size), ("codebook_size", codebook_size)):
        if expected is not None and metadata[key] != expected:
            raise ValueError(f"{name} records {key} = {metadata[key]}, but the tokenizer has {key} = {expected}.")
    grid_size = grid_size or metadata["grid_size"]
    codebook_size = codebook_size or metadata["codebook_size"]
    columns = [column for column in CODE_COLUMNS if column in dataset.column_names]
    if num_classes:
        if "label" not in dataset.column_names:
            raise ValueError(f"{name} has no `label` column, but a prior with {num_classes} classes needs one.")
        columns.append("label")
    for batch in dataset.select_columns(columns).with_format("numpy").iter(batch_size=batch_size):
        for column in columns:
            values = np.asarray(batch[column])
            if column == "label":
                bad = values[(values < 0) | (values >= num_classes)]
                if bad.size:
                    raise ValueError(
                        f"{name} holds label {int(bad[0])}, outside [0, {num_classes}) for a prior with "
                        f"{num_classes} classes. Fix the labels or the number of classes."
                    )
                continue
            if values.ndim != 2 or values.shape[1] != grid_size**2:
                length = values.shape[1] if values.ndim == 2 else "ragged"
                raise ValueError(
                    f"{name}'s `{column}` sequences are {length} codes long, but a {grid_size}×{grid_size} grid has "
                    f"{grid_size**2}: it was not made by this tokenizer (or was cut)."
                )
            if values.size and (values.min() < 0 or values.max() >= codebook_size):
                raise ValueError(
                    f"{name}'s `{column}` holds code {int(values.max() if values.max() >= codebook_size else values.min())}"
                    f", outside the codebook's [0, {codebook_size}): it was not made by this tokenizer."
                )
    return metadata


__all__ = [
    "METADATA_KEY",
    "check_token_dataset",
    "code_feature",
    "load_token_dataset",
    "make_metadata",
    "smallest_code_dtype",
    "token_dataset_metadata",
]
