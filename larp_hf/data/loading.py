"""Loading image datasets as `datasets.Dataset`s with an `image` column (and a `label` ClassLabel where there is one)."""

import gzip
import os
import re
import struct
from pathlib import Path

import datasets
import numpy as np


FASHION_MNIST_NAMES = ("fashion_mnist", "fashion-mnist")
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_ENV = "LARP_FASHION_MNIST_DIR"
# Where the Debian package `dataset-fashion-mnist` puts the original IDX files.
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_LABELS = [
    "T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Column names other datasets use for what larp_hf calls `image` and `label` (CIFAR-10 has `img`, CIFAR-100 `fine_label`).
IMAGE_COLUMN_ALIASES = ("image", "img", "images", "picture", "pixel_values")
# Columns that hold image file paths in a CSV or JSON lines file.
IMAGE_PATH_COLUMN_ALIASES = ("image", "file_name", "filename", "image_path", "path", "file")
LABEL_COLUMN_ALIASES = ("label", "labels", "fine_label", "class", "target")
# `load_image_dataset(..., streaming=True)` streams a memory-mapped split in this many shards (fewer for tiny ones).
STREAM_SHARDS = 16
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files `load_image_dataset` reads directly, by suffix: a table whose image column holds images (parquet, arrow) or
# paths to them (csv, json lines), relative to the file's folder.
TABLE_LOADERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}
# A name ending like this is a file, never a Hub id: when it does not exist it is a mistyped path.
_FILE_SUFFIXES = (*TABLE_LOADERS, ".tsv", ".txt", ".zip", ".tar", ".gz", ".png", ".jpg", ".jpeg")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format, gzipped or not) into a NumPy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path} has unknown IDX data type 0x{data[2]:02x}.")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {array.size} values.")
    return array.reshape(shape)


def _find_idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] is missing from {folder}.")


def _fashion_mnist_examples(images_path: str, labels_path: str, stamp: str):
    # `stamp` (sizes and mtimes) is only here so that the datasets cache fingerprint changes when the files do.
    images, labels = read_idx(images_path), read_idx(labels_path)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels.")
    for image, label in zip(images, labels):
        yield {"image": image, "label": int(label)}


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding Fashion-MNIST's IDX files: `data_dir`, else `$LARP_FASHION_MNIST_DIR`, else the Debian one."""
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"Fashion-MNIST folder {folder} does not exist.")
        return folder
    if os.environ.get(FASHION_MNIST_ENV):
        folder = Path(os.environ[FASHION_MNIST_ENV]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"${FASHION_MNIST_ENV} points to {folder}, which does not exist.")
        return folder
    folder = Path(FASHION_MNIST_DEFAULT_DIR)
    return folder if folder.is_dir() else None


def _load_fashion_mnist_idx(folder: Path, cache_dir: str | None) -> datasets.DatasetDict:
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_MNIST_LABELS)}
    )
    splits = {}
    for split, (images_stem, labels_stem) in FASHION_MNIST_FILES.items():
        images_path, labels_path = _find_idx_file(folder, images_stem), _find_idx_file(folder, labels_stem)
        stamp = ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (images_path, labels_path))
        # from_generator fingerprints the generator and its kwargs: the second load is a cache hit, no parsing.
        splits[split] = datasets.Dataset.from_generator(
            _fashion_mnist_examples,
            features=features,
            gen_kwargs={"images_path": str(images_path), "labels_path": str(labels_path), "stamp": stamp},
            cache_dir=cache_dir,
            split=datasets.NamedSplit(split),
        )
    return datasets.DatasetDict(splits)


def _looks_like_path(name: str) -> bool:
    """
    A name that cannot be a Hub id, so that a missing one is reported at once instead of after datasets' Hub retries:
    Hub ids are `name` or `org/name`; a name that starts like a path, has more parts, ends like a file
    (`data/x.csv`), or whose first part is a local folder (`data/imgs` beside a `data/` folder) is a path.
    """
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not _HUB_ID.match(name):
        return True
    return name.lower().endswith(_FILE_SUFFIXES) or ("/" in name and Path(name.split("/")[0]).is_dir())


def _is_saved_to_disk(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _as_stream(dataset: datasets.Dataset, split: str) -> datasets.IterableDataset:
    """A memory-mapped split as a stream of its Arrow file(s), in shards that DataLoader workers share out."""
    stream = dataset.to_iterable_dataset(num_shards=max(1, min(STREAM_SHARDS, len(dataset))))
    stream.info.splits = datasets.SplitDict()
    stream.info.splits.add(datasets.SplitInfo(name=split, num_examples=len(dataset)))
    return stream


def _find_image_column(features, image_column: str | None, source: str, paths: bool = False) -> str:
    """The image column: `image_column`, else the first `Image` column (an alias first); with `paths`, a column of
    file paths (a CSV's) counts too."""
    if image_column is not None:
        if image_column not in features:
            raise ValueError(
                f"The dataset {source!r} has no column {image_column!r} (image_column); its columns are "
                f"{list(features)}."
            )
        return image_column
    found = next((c for c in IMAGE_COLUMN_ALIASES if isinstance(features.get(c), datasets.Image)), None)
    found = found or next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if found is None and paths:
        found = next((c for c in IMAGE_PATH_COLUMN_ALIASES if _label_kind(features.get(c)) == "strings"), None)
    if found is None:
        raise ValueError(
            f"The dataset {source!r} has no image column (columns: {list(features)}; none has the datasets `Image` "
            "feature). Name the column that holds the images (image_column=...), or cast it with "
            "`dataset.cast_column(name, datasets.Image())`."
        )
    return found


def _find_label_column(features, label_column: str | None, source: str) -> str | None:
    """The label column: `label_column`, else the first alias that holds a ClassLabel, strings or integers."""
    if label_column is not None:
        if label_column not in features:
            raise ValueError(
                f"The dataset {source!r} has no column {label_column!r} (label_column); its columns are "
                f"{list(features)}."
            )
        return label_column
    for column in LABEL_COLUMN_ALIASES:
        feature = features.get(column)
        if isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and _label_kind(feature) is not None
        ):
            return column
    return None


def _label_kind(feature) -> str | None:
    """'names' for a ClassLabel, 'strings' or 'integers' for a Value column of them, else None (not labels)."""
    if isinstance(feature, datasets.ClassLabel):
        return "names"
    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        return "strings"
    if isinstance(dtype, str) and re.fullmatch(r"u?int\d+", dtype):
        return "integers"
    return None


def _rename(dataset, column: str, new: str):
    if column == new:
        return dataset
    if new in dataset.features:
        dataset = dataset.remove_columns(new)
    return dataset.rename_column(column, new)


def _with_path_images(dataset, image_column: str, base: Path):
    """A column of image file paths (a CSV's), relative to `base`, becomes an `Image` column; a missing file is
    named."""
    feature = dataset.features[image_column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return dataset
    paths = dataset[image_column]
    missing = next((p for p in paths if not (base / p).is_file()), None)
    if missing is not None:
        raise FileNotFoundError(
            f"The image file {missing!r} named in the `{image_column}` column does not exist (paths are read relative "
            f"to {base})."
        )
    dataset = dataset.map(lambda row: {image_column: str(base / row[image_column])})
    return dataset.cast_column(image_column, datasets.Image())


def _class_names(splits: dict, column: str, kind: str) -> list[str]:
    """The sorted names of the labels in `column` over every split, so all splits share one label id per class."""
    values = set()
    for dataset in splits.values():
        values.update(dataset.unique(column))
    if None in values:
        raise ValueError(f"The label column `{column}` has rows without a label; fill them or drop those rows.")
    if kind == "strings":
        return sorted(values)
    if min(values) < 0:
        raise ValueError(f"The label column `{column}` holds negative integers ({min(values)}); labels are 0, 1, ...")
    return [str(label) for label in range(max(values) + 1)]


def _standardize_splits(
    splits: dict, source: str, image_column: str | None, label_column: str | None, paths_base: Path | None = None
) -> dict:
    """
    Every split with its images in `image` and, where there are labels, a `label` ClassLabel column: string labels
    become a ClassLabel of their sorted names, integer labels one of names "0".."max" (the same for every split).
    With `paths_base` (a CSV or JSON lines file's folder) an image column of file paths is read as images.
    """
    first = next(iter(splits.values()))
    features = first.features
    if features is None:
        raise ValueError(
            f"The stream {source!r} does not declare its features, so its image column cannot be found; load it "
            "without streaming, or give its files a schema (parquet) or a dataset card that declares them."
        )
    found_image = _find_image_column(features, image_column, source, paths=paths_base is not None)
    if label_column is not None and label_column == found_image:
        raise ValueError(f"image_column and label_column are both {found_image!r}; name two different columns.")
    found_label = _find_label_column(features, label_column, source)
    kind = _label_kind(features[found_label]) if found_label is not None else None
    if found_label is not None and kind is None:
        raise ValueError(
            f"The label column {found_label!r} of {source!r} holds {features[found_label]!r}; labels are class names "
            "(strings) or integers."
        )
    names = None
    if kind in ("strings", "integers"):
        if any(isinstance(d, datasets.IterableDataset) for d in splits.values()):
            raise ValueError(
                f"The label column {found_label!r} of the stream {source!r} holds {kind}, not a ClassLabel: their "
                "classes are only known after reading every row. Load it without streaming."
            )
        names = _class_names(splits, found_label, kind)
    result = {}
    for split, dataset in splits.items():
        if paths_base is not None:
            dataset = _with_path_images(dataset, found_image, paths_base)
        dataset = _rename(dataset, found_image, "image")
        if found_label is not None:
            dataset = _rename(dataset, found_label, "label")
            if names is not None:
                dataset = dataset.cast_column("label", datasets.ClassLabel(names=names))
        result[split] = dataset
    return result


def load_image_dataset(
    name_or_path: str | os.PathLike,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    streaming: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    **load_kwargs,
) -> datasets.Dataset | datasets.DatasetDict | datasets.IterableDataset | datasets.IterableDatasetDict:
    """
    Load an image dataset with an `image` column (datasets `Image` feature) and, where the source has labels, a
    `label` `ClassLabel` column.

    Sources, tried in this order:
    - `"fashion_mnist"`: the original IDX files from `data_dir`, else `$LARP_FASHION_MNIST_DIR`, else
      `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`); if none is there, the Hub dataset
      `zalando-datasets/fashion_mnist`. Parsed once, then served from the datasets cache.
    - a folder written by `save_to_disk` (a `Dataset` or a `DatasetDict`);
    - any other folder, read by `datasets.load_dataset(folder)`, which picks the loader from the files: images (an
      `imagefolder`: class sub-folders become labels; a `metadata.jsonl` / `metadata.csv` beside the images adds
      columns, such as string labels), parquet or arrow files (split names from the file names, e.g.
      `train-00000.parquet`);
    - a parquet, arrow, CSV or JSON lines file: a CSV's or JSON file's image column holds image paths, relative to
      the file's folder;
    - anything else: a Hub dataset id, passed to `datasets.load_dataset` with `load_kwargs`. A name that cannot be
      a Hub id (`./imgs`, `data/x.csv`) and does not exist is a `FileNotFoundError` at once.

    The image column is `image_column`, else the first `Image` column (`image`, `img`, ... first); the label column
    is `label_column`, else the first of `label`, `labels`, `fine_label`, `class`, `target` that holds a ClassLabel,
    strings or integers. They are renamed `image` and `label`. String labels become a `ClassLabel` of their sorted
    names, integer labels one named "0", "1", ... up to the largest; every split gets the same classes.

    Args:
        name_or_path: `"fashion_mnist"`, a local folder or file, or a Hub dataset id.
        split: the split to return (e.g. `"train"`, `"test"`); `None` returns the whole `DatasetDict`.
        data_dir: for `"fashion_mnist"`, the folder with the IDX files.
        cache_dir: the datasets cache folder (default: `$HF_DATASETS_CACHE`).
        streaming: return `IterableDataset`s, read as they are iterated. Hub datasets and image folders are then
            neither downloaded nor converted first; Fashion-MNIST and `save_to_disk` folders, memory-mapped already,
            are streamed from their Arrow files in `STREAM_SHARDS` shards. A stream's `info.splits` holds its number
            of examples where it is known. String or integer labels need the whole data read: not with streams.
        image_column: the column that holds the images (default: found by its `Image` feature).
        label_column: the column that holds the labels (default: found by name, see above).

    Returns:
        A `datasets.Dataset` when `split` is given, else a `datasets.DatasetDict` (their `Iterable` kinds when
        `streaming`).

    Example:

    ```python
    >>> from larp_hf.data import load_image_dataset
    >>> test = load_image_dataset("fashion_mnist", split="test")  # doctest: +SKIP
    >>> test.features["label"].names[:2]  # doctest: +SKIP
    ['T - shirt / top', 'Trouser']
    ```
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    paths_base = None
    if name in FASHION_MNIST_NAMES:
        folder = fashion_mnist_dir(data_dir)
        if folder is not None:
            loaded = _load_fashion_mnist_idx(folder, cache_dir)
        else:
            loaded = _load_from_hub(
                FASHION_MNIST_HUB_ID,
                cache_dir,
                hint=(
                    f"Fashion-MNIST's IDX files were not found in {FASHION_MNIST_DEFAULT_DIR}. Install them with "
                    f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or point ${FASHION_MNIST_ENV} or "
                    "`data_dir=` at a folder holding train-images-idx3-ubyte.gz and friends."
                ),
                **load_kwargs,
            )
    elif path.is_dir():
        if _is_saved_to_disk(path):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = _load_local_folder(path, cache_dir, streaming, **load_kwargs)
    elif path.is_file():
        if path.suffix.lower() not in TABLE_LOADERS:
            raise ValueError(
                f"{name} is a {path.suffix or 'suffix-less'} file; pass a folder (of images, or written by "
                f"save_to_disk), a {', '.join(sorted(TABLE_LOADERS))} file or a Hub dataset id."
            )
        loaded = datasets.load_dataset(
            TABLE_LOADERS[path.suffix.lower()], data_files=str(path), cache_dir=cache_dir, streaming=streaming,
            **load_kwargs,
        )  # fmt: skip
        if path.suffix.lower() in (".csv", ".json", ".jsonl"):
            paths_base = path.resolve().parent
    elif _looks_like_path(name):
        raise FileNotFoundError(
            f"Dataset path {name} does not exist. Pass an existing folder (of images, or written by save_to_disk), "
            "a parquet or CSV file, a Hub dataset id such as 'uoft-cs/cifar10', or 'fashion_mnist'."
        )
    else:
        hint = f"There is no local folder {name!r} either." if "/" not in name else None
        loaded = _load_from_hub(name, cache_dir, hint=hint, streaming=streaming, **load_kwargs)

    if streaming and isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.IterableDatasetDict({key: _as_stream(ds, key) for key, ds in loaded.items()})
    elif streaming and isinstance(loaded, datasets.Dataset):
        loaded = _as_stream(loaded, str(loaded.split or "train"))
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        loaded = type(loaded)(_standardize_splits(dict(loaded), name, image_column, label_column, paths_base))
        if split is None:
            return loaded
        if split not in loaded:
            raise ValueError(f"The dataset {name!r} has no split {split!r}; its splits are {list(loaded)}.")
        return loaded[split]
    # A single saved Dataset is one split: its own name, or "train" when it was saved without one.
    own_split = str(loaded.split) if loaded.split is not None else "train"
    loaded = _standardize_splits({own_split: loaded}, name, image_column, label_column, paths_base)[own_split]
    if split is not None and split != own_split:
        raise ValueError(f"The dataset {name!r} holds a single split ({own_split!r}), not {split!r}.")
    return loaded


def _load_local_folder(path: Path, cache_dir: str | None, streaming: bool, **load_kwargs):
    """A folder that save_to_disk did not write: datasets picks its loader from the files (images, parquet, ...)."""
    try:
        return datasets.load_dataset(str(path), cache_dir=cache_dir, streaming=streaming, **load_kwargs)
    except datasets.exceptions.DataFilesNotFoundError as error:
        raise ValueError(
            f"The folder {path} holds no images or data files that datasets reads ({error}). Put the images in it "
            "(one sub-folder per class for labels), or pass a save_to_disk folder, a parquet or CSV file."
        ) from None


def first_image_size(dataset: datasets.Dataset | datasets.IterableDataset) -> tuple[int, int]:
    """(height, width) of the first image of a dataset or stream with an `image` column (decoded or not)."""
    row = dataset[0] if isinstance(dataset, datasets.Dataset) else next(iter(dataset))
    image = row["image"]
    if isinstance(image, dict):  # an undecoded datasets.Image value: {"bytes", "path"}
        image = datasets.Image().decode_example(image)
    if hasattr(image, "size") and not isinstance(image, np.ndarray):  # PIL: (width, height)
        width, height = image.size
        return height, width
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        return tuple(array.shape[1:3])  # (C, H, W)
    return tuple(array.shape[:2])


def _load_from_hub(repo_id: str, cache_dir: str | None, hint: str | None, **load_kwargs) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(repo_id, cache_dir=cache_dir, **load_kwargs)
    except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as error:
        message = f"Could not load the Hub dataset {repo_id!r}: {error}."
        if hint:
            message = f"{hint} {message}"
        raise FileNotFoundError(message) from error


__all__ = ["fashion_mnist_dir", "load_image_dataset", "read_idx"]
