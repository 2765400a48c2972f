"""
What samples are compared with: real images of a dataset split, their cached features, training code grids. All of it
is read from memory-mapped Arrow files in batches, so memory does not grow with the size of the split.
"""

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import PartialState
from safetensors import safe_open
from safetensors.torch import save
from tqdm.auto import tqdm

from ..atomic_files import open_atomic
from ..data import (
    check_token_dataset,
    load_image_dataset,
    load_token_dataset,
    pixels_dataset,
    read_pixels,
    token_dataset_metadata,
)
from ..data.token_dataset import CODE_COLUMNS
from ..models import LarpImageProcessor
from ..prior import layout_grid
from .feature_networks import FeatureNetwork
from .processes import batches_of_this_process, evaluation_state, from_main_process, gather_rows


logger = logging.getLogger(__name__)
# Token-dataset codes read at a time: 65,536 rows of 16×16 uint8 grids, 8,192 of 32×32 uint16 ones.
TOKEN_BATCH_BYTES = 16 * 2**20


def default_cache_dir() -> Path:
    """Where real-image features are cached: `$LARP_HF_CACHE`, else `~/.cache/larp_hf`."""
    return Path(os.environ.get("LARP_HF_CACHE", Path.home() / ".cache" / "larp_hf"))


def real_image_dataset(
    dataset: str,
    split: str,
    image_size: int | tuple[int, int],
    channels: int,
    data_dir=None,
    pad: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
) -> tuple[datasets.Dataset, str]:
    """
    A dataset split at the given size (a side or (H, W)) as a `pixels` column of uint8 (C, H, W) arrays, made once
    by a cached `datasets.map` and memory-mapped from disk, and its fingerprint. Read it with `image_batch`. Images are
    resized to the size, or with `pad=True` padded to it (centred; larger ones shrunk to fit first), so images already
    at that size keep their own pixels. `dataset` is what `larp_hf.load_image_dataset` takes, with its
    `image_column` and `label_column`; `data_dir` the folder of the Fashion-MNIST IDX files.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    processor = LarpImageProcessor(num_channels=channels, size={"height": height, "width": width}, do_pad=pad)
    images = load_image_dataset(
        dataset, split=split, data_dir=data_dir, image_column=image_column, label_column=label_column
    )
    pixels = pixels_dataset(images, processor)
    return pixels.select_columns(["pixels"]), pixels._fingerprint


def image_batch(pixels: datasets.Dataset, rows: Sequence[int]) -> torch.Tensor:
    """(len(rows), C, H, W) uint8 images of `rows` (a range or indices) of a `real_image_dataset`."""
    return read_pixels(pixels, rows)


# Rows of a cached feature file recomputed on every read, to check it against the network and images it claims.
CACHE_SPOT_CHECK_ROWS = 8


def cached_real_features(
    network: FeatureNetwork,
    pixels: datasets.Dataset,
    fingerprint: str,
    rows: Sequence[int] | None = None,
    cache_dir: Path | None = None,
    desc: str = "",
    state: PartialState | None = None,
    source: dict | None = None,
) -> torch.Tensor | None:
    """
    (len(rows), D) float64 features of `rows` (default: all) of a `real_image_dataset`, computed once and kept on disk
    as a safetensors file. Its name and its metadata are the key it was computed from: the feature network (name and
    weights SHA-256), the dataset's `fingerprint`, `source` (what the images are: dataset, split, size, channels...),
    the rows and their number; the features' SHA-256 is stored beside them. A file is used only when every entry of
    its key and its digest match, and when the features of its first `CACHE_SPOT_CHECK_ROWS` rows, recomputed, agree;
    anything else (a damaged, edited or foreign file) is logged as such and recomputed over it.

    Images are read a network batch at a time; under several processes each computes its share of the batches. The
    features are returned on the main process, `None` on the others.
    """
    state = state or evaluation_state()
    rows = range(len(pixels)) if rows is None else rows
    key = {
        "feature_network": network.name,
        "feature_network_sha256": network.weights_sha256,
        "dataset_fingerprint": fingerprint,
        "source": {name: str(value) for name, value in sorted((source or {}).items())},
        "num_rows": len(rows),
        "rows_sha256": hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest(),
    }
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir or default_cache_dir()) / "features" / f"{name}.safetensors"
    what = desc or "real images"
    cached = None
    if state.is_main_process and path.is_file():
        cached, problem = _read_cached_features(path, key, network, pixels, rows)
        if problem:
            logger.warning("Not using the cached features of %s in %s: %s. Computing them again.", what, path, problem)
    if from_main_process(cached is not None, state):
        logger.info("Features of %s from the cache: %s", what, path)
        return cached
    share = batches_of_this_process(len(rows), network.batch_size, state)
    bar = tqdm(share, desc=f"Features of {what}", disable=not state.is_main_process)
    features = [network(image_batch(pixels, rows[batch.start : batch.stop])) for batch in bar]
    empty = torch.empty(0, network.feature_dim, dtype=torch.float64)  # a process with no batch (tiny splits)
    features = gather_rows(torch.cat(features) if features else empty, state)
    if not state.is_main_process:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    features = features.contiguous()
    metadata = {"key": json.dumps(key, sort_keys=True), "features_sha256": _digest(features)}
    with open_atomic(path) as handle:  # several evaluations may share the cache: each writes its own temporary file
        handle.write(save({"features": features}, metadata=metadata))
    logger.info("Cached the features of %s: %s", what, path)
    return features


def _digest(features: torch.Tensor) -> str:
    return hashlib.sha256(features.numpy().tobytes()).hexdigest()


def _read_cached_features(path: Path, key: dict, network: FeatureNetwork, pixels, rows) -> tuple:
    """(features, None) for a cache file that holds what `key` describes, else (None, what is wrong with it)."""
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            features = handle.get_tensor("features") if "features" in handle.keys() else None
    except Exception as error:  # noqa: BLE001  (a truncated or foreign file: safetensors' own errors)
        return None, f"unreadable ({error})"
    try:
        stored_key = json.loads(metadata.get("key", "null"))
    except json.JSONDecodeError:
        stored_key = None
    if not isinstance(stored_key, dict):
        return None, "it records no key"
    differing = sorted(name for name in key.keys() | stored_key.keys() if key.get(name) != stored_key.get(name))
    if differing:
        return None, f"it was computed from something else (differs in {', '.join(differing)})"
    if features is None or features.dtype != torch.float64 or tuple(features.shape) != (len(rows), network.feature_dim):
        shape = None if features is None else (tuple(features.shape), features.dtype)
        return None, f"it holds {shape}, not {len(rows)} rows of {network.feature_dim} float64 features"
    if metadata.get("features_sha256") != _digest(features.contiguous()):
        return None, "its features do not match their recorded SHA-256 (edited or damaged)"
    checked = list(rows[:CACHE_SPOT_CHECK_ROWS])
    if checked:
        fresh = network(image_batch(pixels, checked))
        if not torch.allclose(fresh, features[: len(checked)], rtol=1e-4, atol=1e-6 * float(fresh.abs().max()) + 1e-12):
            return None, f"its first {len(checked)} rows differ from the features of those images computed now"
    return features, None


def training_token_split(
    token_dataset: str | os.PathLike,
    split: str = "train",
    tokenizer_hash: str | None = None,
    *,
    grid=None,
    codebook_size: int | None = None,
) -> datasets.Dataset:
    """
    The `split` of a token dataset (as written by encode_dataset.py, from any place `load_token_dataset` reads),
    checked (in batches) and reduced to its code columns; read its grids with `code_grid_batches`. A token dataset
    made by another tokenizer (`tokenizer_hash`), on another grid (`grid`, `(h, w)`) or of another `codebook_size`
    is refused.
    """
    splits = load_token_dataset(token_dataset)
    if split not in splits:
        raise ValueError(f"The token dataset {token_dataset} has no {split!r} split (it has {sorted(splits)}).")
    tokens = splits[split]
    check_token_dataset(
        tokens, tokenizer_hash=tokenizer_hash, grid=grid, codebook_size=codebook_size,
        name=f"The token dataset {token_dataset}",
    )  # fmt: skip
    if len(tokens) == 0:
        raise ValueError(f"The {split!r} split of the token dataset {token_dataset} is empty: nothing to compare with.")
    return tokens.select_columns([column for column in CODE_COLUMNS if column in tokens.column_names])


def token_batch_rows(tokens: datasets.Dataset) -> int:
    """How many rows of a token dataset's code column hold `TOKEN_BATCH_BYTES` of codes, as stored."""
    height, width = layout_grid(token_dataset_metadata(tokens))
    itemsize = np.dtype(tokens.features["input_ids"].feature.dtype).itemsize
    return max(1, TOKEN_BATCH_BYTES // (height * width * itemsize))


def code_grid_batches(
    tokens: datasets.Dataset, rows: range | None = None, batch_size: int | None = None
) -> Iterator[torch.Tensor]:
    """
    (b, h·w) code grids of `rows` (default: all) of a `training_token_split`, in the integer type they are stored in,
    `batch_size` rows at a time (default: `token_batch_rows`, so a batch is a bounded number of bytes whatever the
    grid): each batch's grids, then the grids of the mirrored images when the dataset has them (the prior trained on
    both).
    """
    rows = range(len(tokens)) if rows is None else rows
    batch_size = batch_size or token_batch_rows(tokens)
    for start in range(rows.start, rows.stop, batch_size):
        table = tokens.with_format("arrow")[start : min(start + batch_size, rows.stop)]
        for column in tokens.column_names:
            # Arrow's own narrow codes (uint8 up to 256 codes, uint16 up to 65,536): the numpy format would widen
            # them to int64.
            grids = [chunk.flatten().to_numpy().reshape(len(chunk), -1) for chunk in table[column].chunks]
            yield torch.from_numpy(np.concatenate(grids))


__all__ = [
    "cached_real_features",
    "code_grid_batches",
    "default_cache_dir",
    "image_batch",
    "real_image_dataset",
    "token_batch_rows",
    "training_token_split",
]
