"""What samples are compared with: real images of a dataset split, their cached features, training code grids."""

import logging
import os
from pathlib import Path

import torch

from ..data import check_token_dataset, load_image_dataset, load_token_dataset, pixels_dataset
from ..models import LarpImageProcessor
from .feature_networks import FeatureNetwork


logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where real-image features are cached: `$LARP_HF_CACHE`, else `~/.cache/larp_hf`."""
    return Path(os.environ.get("LARP_HF_CACHE", Path.home() / ".cache" / "larp_hf"))


def real_images(dataset: str, split: str, image_size: int, channels: int, data_dir=None) -> tuple[torch.Tensor, str]:
    """
    (N, C, H, W) uint8 images of a dataset split at the given size (cached by `datasets`), and its fingerprint.
    `dataset` is what `larp_hf.load_image_dataset` takes; `data_dir` the folder of the Fashion-MNIST IDX files.
    """
    processor = LarpImageProcessor(num_channels=channels, size={"height": image_size, "width": image_size})
    pixels = pixels_dataset(load_image_dataset(dataset, split=split, data_dir=data_dir), processor)
    # with_format("torch") gives int64 for the uint8 column: keep the 0-255 values in uint8.
    return pixels.with_format("torch")[:]["pixels"].to(torch.uint8), pixels._fingerprint


def cached_real_features(
    network: FeatureNetwork, images: torch.Tensor, fingerprint: str, cache_dir: Path | None = None, desc: str = ""
) -> torch.Tensor:
    """Features of a real image set, computed once per (dataset fingerprint, feature network) and kept on disk."""
    cache_dir = Path(cache_dir or default_cache_dir()) / "features"
    path = cache_dir / f"{fingerprint}-{network.weights_sha256[:16]}.pt"
    if path.is_file():
        logger.info("Features of %s from the cache: %s", desc or "real images", path)
        return torch.load(path)
    features = network(images, desc=f"Features of {desc or 'real images'}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(features, temporary)
    os.replace(temporary, path)
    logger.info("Cached the features of %s: %s", desc or "real images", path)
    return features


def training_code_grids(
    token_dataset: str | os.PathLike, split: str = "train", tokenizer_hash: str | None = None
) -> torch.Tensor:
    """
    (N, h·w) code grids of a token dataset split (as written by encode_dataset.py, from any place
    `load_token_dataset` reads), with the grids of the mirrored images when the dataset has them: the prior trained on
    both. With `tokenizer_hash`, a token dataset made by another tokenizer is refused.
    """
    splits = load_token_dataset(token_dataset)
    if split not in splits:
        raise ValueError(f"The token dataset {token_dataset} has no {split!r} split (it has {sorted(splits)}).")
    tokens = splits[split]
    check_token_dataset(tokens, tokenizer_hash=tokenizer_hash, name=f"The token dataset {token_dataset}")
    columns = [c for c in ("input_ids", "input_ids_flipped") if c in tokens.column_names]
    table = tokens.with_format("torch", columns=columns)[:]
    return torch.cat([table[column].long() for column in columns])


__all__ = ["cached_real_features", "default_cache_dir", "real_images", "training_code_grids"]
