"""Images as pictures: tensors to PIL images, and many images as one grid (the model card's, the CLI's, the demo's)."""

import math

import PIL.Image
import torch
from torchvision.utils import make_grid

from ..models.vqvae.image_processing_larp_vqvae import to_pil_images


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> PIL.Image.Image:
    """(N, C, H, W) images in [0, 1] -> one PIL image, `nrow` per row (default: a square-ish grid), white gaps."""
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images.float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)  # (3, H', W')
    return to_pil_images((grid[:1] if images.shape[1] == 1 else grid)[None])[0]  # mode L for grey, RGB otherwise


__all__ = ["image_grid", "to_pil_images"]
