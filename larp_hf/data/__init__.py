from .collator import LarpPriorCollator
from .encoding import encode_dataset
from .loading import fashion_mnist_dir, first_image_size, load_image_dataset, read_idx
from .preprocessed_images import (
    InMemoryPixels,
    PreprocessedImages,
    collate_images,
    pixels_dataset,
    preprocess_images,
    random_horizontal_flip,
    read_pixels,
)
from .provenance import DatasetChoice, DatasetRecord, choose_dataset
from .streaming import StreamedImages
from .token_dataset import check_token_dataset, load_token_dataset, smallest_code_dtype, token_dataset_metadata


__all__ = [
    "DatasetChoice",
    "DatasetRecord",
    "InMemoryPixels",
    "LarpPriorCollator",
    "PreprocessedImages",
    "StreamedImages",
    "check_token_dataset",
    "choose_dataset",
    "collate_images",
    "encode_dataset",
    "fashion_mnist_dir",
    "first_image_size",
    "load_image_dataset",
    "load_token_dataset",
    "pixels_dataset",
    "preprocess_images",
    "random_horizontal_flip",
    "read_idx",
    "read_pixels",
    "smallest_code_dtype",
    "token_dataset_metadata",
]
