from .loading import fashion_mnist_dir, load_image_dataset, read_idx


__all__ = ["fashion_mnist_dir", "load_image_dataset", "read_idx"]
