"""Image datasets as the tokenizer's input, a batch at a time: memory follows the batch, not the dataset."""

import datasets
import torch


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


def collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack `PreprocessedImages` rows into a batch: (B, C, H, W) `pixel_values` or `pixels`, (B,) `label`."""
    batch = {name: torch.stack([example[name] for example in examples]) for name in ("pixel_values", "pixels")
             if name in examples[0]}  # fmt: skip
    if "label" in examples[0]:
        batch["label"] = torch.tensor([example["label"] for example in examples], dtype=torch.long)
    return batch


__all__ = ["PreprocessedImages", "collate_images", "preprocess_images"]
