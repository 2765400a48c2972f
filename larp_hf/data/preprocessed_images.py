"""
Image datasets as the networks' input: preprocessed a batch at a time (memory follows the batch, not the dataset), or
once into a cached split of uint8 pixels held in memory; and the flips that augment them.
"""

import datasets
import numpy as np
import torch

from ..models.vqvae.image_processing_larp_vqvae import LarpImageProcessor


class PreprocessedImages(torch.utils.data.Dataset):
    """
    The rows of a `datasets.Dataset` with an `image` column, preprocessed for the tokenizer when a batch of them is
    asked for. A DataLoader asks with a whole batch of indices (`__getitems__`): the rows are read from the
    memory-mapped Arrow table, decoded, converted and resized by `image_processor` in the process that asks (a
    DataLoader worker, when there are workers). Nothing is kept between batches.

    Each row is a dict with `label` where the dataset has one, and
    - `pixel_values`: the (C, H, W) float tensor the tokenizer takes (`normalize=True`), or
    - `pixels`: the (C, H, W) uint8 image at the model's size, rounded (`normalize=False`), for a caller that
      normalises per batch (`image_processor(pixels, do_resize=False)`) and keeps batches small on their way out of
      the workers.

    A row whose image cannot be decoded raises a `ValueError` naming its index in `dataset` (plus `first_row`, for
    a dataset that is a slice of a larger one).

    Args:
        dataset: a `datasets.Dataset` with an `image` column (see `load_image_dataset`).
        image_processor: the tokenizer's `LarpImageProcessor`.
        normalize: give `pixel_values` (True) or `pixels` (False).
        first_row: added to the row indices in error messages.
    """

    def __init__(self, dataset: datasets.Dataset, image_processor, normalize: bool = True, first_row: int = 0):
        if "image" not in dataset.column_names:
            raise ValueError(
                f"The dataset has no `image` column (columns: {dataset.column_names}); see load_image_dataset."
            )
        self.image_feature = dataset.features["image"]
        if not isinstance(self.image_feature, datasets.Image):
            raise ValueError(
                f"The `image` column is a {type(self.image_feature).__name__}, not a datasets `Image`: cast it with "
                "`dataset.cast_column('image', datasets.Image())`."
            )
        columns = ["image", "label"] if "label" in dataset.column_names else ["image"]
        # Decoded here rather than by datasets, so that a broken image is reported with its row.
        self.dataset = dataset.select_columns(columns).cast_column("image", datasets.Image(decode=False))
        self.image_processor = image_processor
        self.normalize = normalize
        self.first_row = first_row

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        rows = self.dataset[list(indices)]  # one read of the batch's rows
        images = [self._decode(value, index) for value, index in zip(rows["image"], indices)]
        ((name, pixels),) = preprocess_images(images, self.image_processor, self.normalize).items()
        examples = [{name: row} for row in pixels]
        for example, label in zip(examples, rows.get("label", ())):
            example["label"] = label
        return examples

    def _decode(self, value: dict, index: int):
        try:
            return self.image_feature.decode_example(value)
        except Exception as error:
            raise ValueError(
                f"Row {self.first_row + index} of the dataset holds an image that cannot be decoded "
                f"({type(error).__name__}: {error}). Remove or replace that row."
            ) from error


def preprocess_images(images: list, image_processor, normalize: bool = True) -> dict[str, torch.Tensor]:
    """
    A batch of decoded images -> `{"pixel_values": (B, C, H, W) float32}`, the tokenizer's input (`normalize=True`), or
    `{"pixels": (B, C, H, W) uint8}`, the images at the model's size, rounded (`normalize=False`).
    """
    if normalize:
        return {"pixel_values": image_processor(images, return_tensors="pt")["pixel_values"]}
    pixels = image_processor(images, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
    return {"pixels": pixels.round().to(torch.uint8)}


def pixels_dataset(dataset: datasets.Dataset, image_processor: LarpImageProcessor, batch_size: int = 1000) -> datasets.Dataset:
    """
    Decode, convert and resize every image once (a cached `map`) into a `pixels` column of uint8 (C, H, W) arrays at
    the model's size; `label` is kept. The fixed-shape `Array3D` column reads back as one array in milliseconds, where
    nested lists take minutes. Read it with `read_pixels` or hold it with `InMemoryPixels`, which keep it uint8:
    datasets' numpy and torch formats give int64, eight times the memory. This holds a whole split;
    `PreprocessedImages` serves a batch at a time.
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


def read_pixels(dataset: datasets.Dataset, rows=None) -> torch.Tensor:
    """
    The (N, C, H, W) uint8 pixels of a `pixels_dataset` (of its `rows`, a range or indices, when given), read through
    Arrow: datasets' numpy and torch formats would widen them to int64 first, eight times the memory.
    """
    table = dataset.with_format("arrow")
    if rows is None:
        column = table[:]["pixels"]
    elif isinstance(rows, range) and rows.step == 1:
        column = table[rows.start : rows.stop]["pixels"]
    else:
        column = table[[int(row) for row in rows]]["pixels"]
    return torch.from_numpy(np.concatenate([chunk.to_numpy(zero_copy_only=False) for chunk in column.chunks]))


class InMemoryPixels(torch.utils.data.Dataset):
    """
    A split preprocessed once by `pixels_dataset` (cached by datasets), held in memory as one (N, C, H, W) uint8
    tensor, `pixels`, and where the split has labels, an (N,) int64 tensor, `labels`. Its rows are dicts with `pixels`
    and `label`, as `PreprocessedImages(..., normalize=False)` gives them; normalise them per batch
    (`image_processor(pixels, do_resize=False)`).
    """

    def __init__(self, dataset: datasets.Dataset):
        self.pixels = read_pixels(dataset)
        self.labels = None
        if "label" in dataset.column_names:
            self.labels = torch.from_numpy(dataset.with_format("arrow")[:]["label"].to_numpy().astype(np.int64))

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> dict:
        if self.labels is None:
            return {"pixels": self.pixels[index]}
        return {"pixels": self.pixels[index], "label": self.labels[index]}


def random_horizontal_flip(pixel_values: torch.Tensor) -> torch.Tensor:
    """
    Light augmentation of a (B, C, H, W) batch: a random half of it, drawn from the global random generator (which
    checkpoints save and restore), mirrored left-right. Call it in the training loop, not in a DataLoader: accelerate
    prefetches a batch ahead, and workers have random generators of their own.
    """
    flipped = torch.rand(len(pixel_values), device=pixel_values.device) < 0.5  # (B,)
    return torch.where(flipped[:, None, None, None], pixel_values.flip(-1), pixel_values)


def collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack `PreprocessedImages` rows into a batch: (B, C, H, W) `pixel_values` or `pixels`, (B,) `label`."""
    batch = {name: torch.stack([example[name] for example in examples]) for name in ("pixel_values", "pixels")
             if name in examples[0]}  # fmt: skip
    if "label" in examples[0]:
        batch["label"] = torch.tensor([example["label"] for example in examples], dtype=torch.long)
    return batch


__all__ = [
    "InMemoryPixels",
    "PreprocessedImages",
    "collate_images",
    "pixels_dataset",
    "preprocess_images",
    "random_horizontal_flip",
    "read_pixels",
]
