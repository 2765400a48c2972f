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
LABEL_COLUMN_ALIASES = ("label", "labels", "fine_label", "class", "target")
# `load_image_dataset(..., streaming=True)` streams a memory-mapped split in this many shards (fewer for tiny ones).
STREAM_SHARDS = 16
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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
    # Hub ids are `name` or `org/name`; anything else that does not exist on disk is a mistyped path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or not _HUB_ID.match(name)


def _is_saved_to_disk(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _as_stream(dataset: datasets.Dataset, split: str) -> datasets.IterableDataset:
    """A memory-mapped split as a stream of its Arrow file(s), in shards that DataLoader workers share out."""
    stream = dataset.to_iterable_dataset(num_shards=max(1, min(STREAM_SHARDS, len(dataset))))
    stream.info.splits = datasets.SplitDict()
    stream.info.splits.add(datasets.SplitInfo(name=split, num_examples=len(dataset)))
    return stream


def _standardize_columns(dataset, source: str):
    """Rename the image/label columns to `image`/`label` and check that there is an image column."""
    features = dataset.features
    if features is None:
        raise ValueError(
            f"The stream {source!r} does not declare its features, so its image column cannot be found; load it "
            "without streaming, or give its files a schema (parquet) or a dataset card that declares them."
        )
    image_column = next((c for c in IMAGE_COLUMN_ALIASES if isinstance(features.get(c), datasets.Image)), None)
    if image_column is None:
        image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None:
        raise ValueError(
            f"The dataset {source!r} has no image column (columns: {list(features)}; none has the datasets `Image` "
            "feature). Cast the column that holds the images with "
            "`dataset.cast_column(name, datasets.Image())` and rename it to `image`."
        )
    if image_column != "image":
        if "image" in features:
            dataset = dataset.remove_columns("image")
        dataset = dataset.rename_column(image_column, "image")
    label_column = next(
        (c for c in LABEL_COLUMN_ALIASES if isinstance(dataset.features.get(c), datasets.ClassLabel)), None
    )
    if label_column is not None and label_column != "label":
        if "label" in dataset.features:
            dataset = dataset.remove_columns("label")
        dataset = dataset.rename_column(label_column, "label")
    return dataset


def load_image_dataset(
    name_or_path: str | os.PathLike,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    streaming: bool = False,
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
    - any other folder: read as an `imagefolder` (class sub-folders become labels);
    - anything else: a Hub dataset id, passed to `datasets.load_dataset` with `load_kwargs`.

    Args:
        name_or_path: `"fashion_mnist"`, a local folder, or a Hub dataset id.
        split: the split to return (e.g. `"train"`, `"test"`); `None` returns the whole `DatasetDict`.
        data_dir: for `"fashion_mnist"`, the folder with the IDX files.
        cache_dir: the datasets cache folder (default: `$HF_DATASETS_CACHE`).
        streaming: return `IterableDataset`s, read as they are iterated. Hub datasets and image folders are then
            neither downloaded nor converted first; Fashion-MNIST and `save_to_disk` folders, memory-mapped already,
            are streamed from their Arrow files in `STREAM_SHARDS` shards. A stream's `info.splits` holds its number
            of examples where it is known.

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
            loaded = datasets.load_dataset(
                "imagefolder", data_dir=str(path), cache_dir=cache_dir, streaming=streaming, **load_kwargs
            )
    elif path.exists():
        raise ValueError(
            f"{name} is a file; pass a folder (an imagefolder or a save_to_disk folder) or a Hub dataset id."
        )
    elif _looks_like_path(name):
        raise FileNotFoundError(
            f"Dataset path {name} does not exist. Pass an existing folder (an imagefolder or a save_to_disk folder), "
            "a Hub dataset id such as 'uoft-cs/cifar10', or 'fashion_mnist'."
        )
    else:
        loaded = _load_from_hub(name, cache_dir, hint=None, streaming=streaming, **load_kwargs)

    if streaming and isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.IterableDatasetDict({key: _as_stream(ds, key) for key, ds in loaded.items()})
    elif streaming and isinstance(loaded, datasets.Dataset):
        loaded = _as_stream(loaded, str(loaded.split or "train"))
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        loaded = type(loaded)({key: _standardize_columns(ds, name) for key, ds in loaded.items()})
        if split is None:
            return loaded
        if split not in loaded:
            raise ValueError(f"The dataset {name!r} has no split {split!r}; its splits are {list(loaded)}.")
        return loaded[split]
    loaded = _standardize_columns(loaded, name)
    # A single saved Dataset is one split: its own name, or "train" when it was saved without one.
    own_split = str(loaded.split) if loaded.split is not None else "train"
    if split is not None and split != own_split:
        raise ValueError(f"The dataset {name!r} holds a single split ({own_split!r}), not {split!r}.")
    return loaded


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
