"""Encoding image datasets into token datasets: the codes of every image, once, cached by `datasets`."""

import datasets
import torch
from datasets.fingerprint import Hasher

from ..models.vqvae.image_processing_larp_vqvae import LarpImageProcessor
from ..models.vqvae.modeling_larp_vqvae import LarpVQVAEModel
from .token_dataset import code_feature, make_metadata


def pixels_dataset(dataset: datasets.Dataset, image_processor: LarpImageProcessor, batch_size: int = 1000) -> datasets.Dataset:
    """
    Decode, convert and resize every image once (a cached `map`) into a `pixels` column of uint8 (C, H, W) arrays at
    the model's size; `label` is kept. The fixed-shape `Array3D` column turns into one tensor with
    `with_format("torch")[:]` in milliseconds, where nested lists take minutes (bench/bench_vqvae_dataloading.py).
    """
    size = image_processor.size
    shape = (image_processor.num_channels, size["height"], size["width"])

    def to_pixels(batch):
        pixels = image_processor(batch["image"], do_rescale=False, do_normalize=False, return_tensors="pt")
        return {"pixels": pixels["pixel_values"].round().to(torch.uint8).numpy()}

    features = {"pixels": datasets.Array3D(shape=shape, dtype="uint8")}
    if "label" in dataset.column_names:
        features["label"] = dataset.features["label"]
    return dataset.map(
        to_pixels,
        batched=True,
        batch_size=batch_size,
        remove_columns=[c for c in dataset.column_names if c != "label"],
        features=datasets.Features(features),
        desc="Preprocessing images",
    )


def encode_dataset(
    vqvae: LarpVQVAEModel,
    dataset: datasets.Dataset,
    image_processor: LarpImageProcessor | None = None,
    batch_size: int = 256,
    flip_augment: bool = True,
) -> datasets.Dataset:
    """
    Turn an image dataset into a token dataset with `Dataset.map(batched=True)`.

    Columns: `input_ids` (the h·w codes of each image in raster order, in the smallest fitting unsigned integer type),
    `input_ids_flipped` (the codes of the horizontally flipped image, when `flip_augment`) and `label` when the source
    has one. The tokenizer's hash, grid and codebook size are stored in the `input_ids` feature, where they survive
    `save_to_disk`, parquet and `push_to_hub` (see `larp_hf.data.token_dataset`). A second call with the same
    tokenizer, processor and data is a cache hit: the cache key is built from the source's fingerprint and the
    tokenizer's hash, not from pickling the model.

    Args:
        vqvae: the tokenizer (put it on the device you want the encoding to run on).
        dataset: a `datasets.Dataset` with an `image` column (see `load_image_dataset`).
        image_processor: defaults to `LarpImageProcessor.from_vqvae_config(vqvae.config)`.
        batch_size: images encoded per forward pass.
        flip_augment: also store the codes of the mirrored images.
    """
    if "image" not in dataset.column_names:
        raise ValueError(f"The dataset has no `image` column (columns: {dataset.column_names}); see load_image_dataset.")
    config = vqvae.config
    image_processor = image_processor or LarpImageProcessor.from_vqvae_config(config)
    tokenizer_hash = vqvae.tokenizer_hash()
    metadata = make_metadata(tokenizer_hash, config.grid_size, config.codebook_size, flip_augment)
    features = {"input_ids": code_feature(metadata)}
    if flip_augment:
        features["input_ids_flipped"] = code_feature(metadata)
    if "label" in dataset.column_names:
        features["label"] = dataset.features["label"]
    vqvae = vqvae.eval()
    device = next(vqvae.parameters()).device

    def encode(batch):
        pixel_values = image_processor(batch["image"], return_tensors="pt")["pixel_values"].to(device)
        encoded = {"input_ids": vqvae.encode(pixel_values).flatten(1).cpu().numpy()}  # (B, h·w)
        if flip_augment:
            encoded["input_ids_flipped"] = vqvae.encode(pixel_values.flip(-1)).flatten(1).cpu().numpy()
        return encoded

    fingerprint = Hasher.hash(
        [dataset._fingerprint, tokenizer_hash, image_processor.to_dict(), flip_augment, datasets.Features(features).to_dict()]
    )
    with torch.no_grad():
        encoded = dataset.map(
            encode,
            batched=True,
            batch_size=batch_size,
            remove_columns=[c for c in dataset.column_names if c != "label"],
            features=datasets.Features(features),
            new_fingerprint=fingerprint,
            desc="Encoding images into codes",
        )
    return encoded


__all__ = ["encode_dataset", "pixels_dataset"]
