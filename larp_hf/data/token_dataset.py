"""Token datasets as Hub artefacts: the tokenizer's identity travels inside the features, loading takes any source,
and every token dataset is checked before a prior trains on it or an evaluation reads it.

The metadata (tokenizer hash, grid (h, w), codebook size, flips and the vocabulary layout a prior gives the codes) is JSON in
the `id` of the code column's value feature. `datasets` keeps feature ids through `save_to_disk`, `map`/`select`, the
parquet schema (`to_parquet`, `push_to_hub` shards) and the dataset card's `dataset_info`, so no side file is needed.
"""

import json
import os
from pathlib import Path

import datasets
import numpy as np

from ..prior import grid_fields, layout_grid, vocabulary_layout


METADATA_KEY = "larp_token_dataset"
CODE_COLUMNS = ("input_ids", "input_ids_flipped")
_LOADERS_BY_SUFFIX = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def smallest_code_dtype(codebook_size: int) -> str:
    """The narrowest unsigned integer type that holds every code: uint8 up to 256 codes, uint16 up to 65,536."""
    if codebook_size <= 2**8:
        return "uint8"
    if codebook_size <= 2**16:
        return "uint16"
    return "uint32"


def code_feature(metadata: dict) -> datasets.List:
    """The feature of a code column: `h·w` unsigned integers whose value feature carries `metadata` in its id."""
    value = datasets.Value(smallest_code_dtype(metadata["codebook_size"]), id=json.dumps({METADATA_KEY: metadata}))
    height, width = layout_grid(metadata)
    return datasets.List(value, length=height * width)


def make_metadata(
    tokenizer_hash: str,
    grid=None,
    codebook_size: int | None = None,
    flip_augment: bool = True,
    *,
    grid_size: int | None = None,
    dataset: dict | None = None,
) -> dict:
    """
    What a token dataset records about the tokenizer that made it, and the token ids a prior gives its codes and
    prefix (`larp_hf.prior.vocabulary_layout`). `grid` is the tokenizer's `(h, w)` (or an int, square), recorded as
    `grid: [h, w]` and, when square, also as `grid_size` (`larp_hf.prior.grid_fields`); `grid_size=` is the older
    keyword for a square grid. `dataset` is the images' `DatasetRecord.to_dict()` (`larp_hf.data.provenance`),
    recorded when given.
    """
    if codebook_size is None:
        raise ValueError("`codebook_size` is required: the number of codes of the tokenizer that made the dataset.")
    # The ids a class-conditional prior gives its tokens (BOS and class 0 do not depend on the number of classes).
    layout = vocabulary_layout(codebook_size, grid, num_classes=1, grid_size=grid_size)
    return {
        "tokenizer_hash": tokenizer_hash,
        **grid_fields(grid, grid_size),
        "codebook_size": codebook_size,
        "flip_augment": flip_augment,
        "vocabulary": {
            "codes": [0, layout["codebook_size"]],
            "bos_token_id": layout["bos_token_id"],
            "class_token_offset": layout["class_token_offset"],
        },
        **({"dataset": dataset} if dataset is not None else {}),
    }


def token_dataset_metadata(dataset: datasets.Dataset | datasets.IterableDataset) -> dict:
    """
    What `encode_dataset` recorded: tokenizer hash, grid (`grid` [h, w]; square grids also, and older datasets only,
    `grid_size`: read it with `larp_hf.prior.layout_grid`), codebook size, flips. Clear error when absent.
    """
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
    grid=None,
    codebook_size: int | None = None,
    num_classes: int | None = None,
    name: str = "the token dataset",
    batch_size: int = 65536,
    grid_size: int | None = None,
):
    """
    Refuse a token dataset a prior must not train on, with a `ValueError` that names `name`, the problem and the fix:
    made by another tokenizer (`tokenizer_hash`), another grid than the prior's (`grid`, `(h, w)` or an int for a
    square grid; `grid_size=` is the older keyword) or codebook size, codes or labels that are not integers (floats
    would be truncated), sequences that are not `h·w` codes long, codes outside `[0, codebook_size)`, or (with
    `num_classes`) labels outside `[0, num_classes)`. Reads the columns in batches of `batch_size` rows, so memory
    does not grow with the dataset.
    """
    metadata = token_dataset_metadata(dataset)
    if tokenizer_hash is not None and metadata["tokenizer_hash"] != tokenizer_hash:
        raise ValueError(
            f"{name} was made by tokenizer {metadata['tokenizer_hash'][:12]}…, but the tokenizer here is "
            f"{tokenizer_hash[:12]}…: its codes mean something else. Re-encode the images with this tokenizer "
            "(recipes/encode_dataset.py) or use the tokenizer that made it."
        )
    recorded_grid = layout_grid(metadata)
    if grid is not None or grid_size is not None:
        expected_grid = layout_grid(grid_fields(grid, grid_size))
        if recorded_grid != expected_grid:
            if recorded_grid[0] == recorded_grid[1] and expected_grid[0] == expected_grid[1]:  # as before non-square
                problem = f"records grid_size = {recorded_grid[0]}, but the tokenizer has grid_size = {expected_grid[0]}"
            else:
                problem = (
                    f"holds codes on a {recorded_grid[0]}×{recorded_grid[1]} grid, but the tokenizer (and a prior "
                    f"over its codes) has a {expected_grid[0]}×{expected_grid[1]} grid"
                )
            raise ValueError(
                f"{name} {problem}. Re-encode the images with this tokenizer (recipes/encode_dataset.py --vqvae ...) "
                "or use the tokenizer that made it."
            )
    if codebook_size is not None and metadata["codebook_size"] != codebook_size:
        raise ValueError(
            f"{name} records codebook_size = {metadata['codebook_size']}, but the tokenizer has codebook_size = "
            f"{codebook_size}. Re-encode the images with this tokenizer (recipes/encode_dataset.py --vqvae ...) or use "
            "the tokenizer that made it."
        )
    height, width = recorded_grid
    codebook_size = codebook_size or metadata["codebook_size"]
    columns = [column for column in CODE_COLUMNS if column in dataset.column_names]
    if num_classes:
        if "label" not in dataset.column_names:
            raise ValueError(f"{name} has no `label` column, but a prior with {num_classes} classes needs one.")
        columns.append("label")
    for column in columns:  # by the features: nothing is read to refuse a column of the wrong type
        _refuse_non_integers(name, column, _value_dtype(dataset.features[column]))
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
            if values.ndim != 2 or values.shape[1] != height * width:
                length = values.shape[1] if values.ndim == 2 else "ragged"
                raise ValueError(
                    f"{name}'s `{column}` sequences are {length} codes long, but a {height}×{width} grid has "
                    f"{height * width}: it was not made by this tokenizer (or was cut). Re-encode the images "
                    "(recipes/encode_dataset.py)."
                )
            if values.size and (values.min() < 0 or values.max() >= codebook_size):
                raise ValueError(
                    f"{name}'s `{column}` holds code {int(values.max() if values.max() >= codebook_size else values.min())}"
                    f", outside the codebook's [0, {codebook_size}): it was not made by this tokenizer. Re-encode the "
                    "images with it (recipes/encode_dataset.py --vqvae ...)."
                )
    return metadata


def _value_dtype(feature) -> str:
    """The dtype of the values of a column's feature (a Value, a ClassLabel, or lists of them)."""
    while not hasattr(feature, "dtype") and hasattr(feature, "feature"):
        feature = feature.feature
    return getattr(feature, "dtype", type(feature).__name__)


def _refuse_non_integers(name: str, column: str, dtype: str):
    """Codes and labels are integers: a column of another type (floats would be truncated) is refused."""
    if dtype in np.sctypeDict and np.dtype(dtype).kind in "iu":
        return
    what = "codes" if column != "label" else "labels"
    raise ValueError(
        f"{name}'s `{column}` column holds {dtype} values, but {what} are integers: fractional values would be cut to "
        f"whole ones and trained on. Re-encode the images (recipes/encode_dataset.py), or cast `{column}` to an "
        "integer type (`dataset.cast_column`) after checking that every value is whole."
    )


__all__ = [
    "METADATA_KEY",
    "check_token_dataset",
    "code_feature",
    "load_token_dataset",
    "make_metadata",
    "smallest_code_dtype",
    "token_dataset_metadata",
]
