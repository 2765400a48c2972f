from .collator import LarpPriorCollator
from .encoding import encode_dataset, pixels_dataset, smallest_code_dtype, token_dataset_metadata
from .loading import fashion_mnist_dir, load_image_dataset, read_idx


__all__ = [
    "LarpPriorCollator",
    "encode_dataset",
    "fashion_mnist_dir",
    "load_image_dataset",
    "pixels_dataset",
    "read_idx",
    "smallest_code_dtype",
    "token_dataset_metadata",
]
