"""Many images as one picture: the sample grids of the model card, the CLI and the README."""

import math

import PIL.Image
import torch
from torchvision.utils import make_grid


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> PIL.Image.Image:
    """(N, C, H, W) images in [0, 1] -> one PIL image, `nrow` per row (default: a square-ish grid), white gaps."""
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images.float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)  # (3, H', W')
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(array[..., 0] if images.shape[1] == 1 else array)  # mode L for grey, RGB otherwise


__all__ = ["image_grid"]
