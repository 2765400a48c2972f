from ..lazy_exports import lazy_exports


# Imported from their modules when first used (see larp_hf/lazy_exports.py).
_EXPORTS = {
    "DatasetChoice": ".provenance",
    "DatasetRecord": ".provenance",
    "InMemoryPixels": ".preprocessed_images",
    "LarpPriorCollator": ".collator",
    "PreprocessedImages": ".preprocessed_images",
    "StreamedImages": ".streaming",
    "check_token_dataset": ".token_dataset",
    "choose_dataset": ".provenance",
    "collate_images": ".preprocessed_images",
    "encode_dataset": ".encoding",
    "fashion_mnist_dir": ".loading",
    "first_image_size": ".loading",
    "load_image_dataset": ".loading",
    "load_token_dataset": ".token_dataset",
    "pixels_dataset": ".preprocessed_images",
    "preprocess_images": ".preprocessed_images",
    "random_horizontal_flip": ".preprocessed_images",
    "read_idx": ".loading",
    "read_pixels": ".preprocessed_images",
    "smallest_code_dtype": ".token_dataset",
    "token_dataset_metadata": ".token_dataset",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


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
