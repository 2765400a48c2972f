"""Images as pictures: tensors to PIL images, and many images as one grid (the model card's, the CLI's, the demo's)."""

import math

import PIL.Image
import torch
from torchvision.utils import make_grid


def to_pil_images(images: torch.Tensor) -> list[PIL.Image.Image]:
    """
    (N, C, H, W) images in [0, 1], C = 1 or 3 -> N PIL images, mode L for one channel and RGB for three: the values
    clamped to [0, 1], scaled to 0-255 and rounded, as `LarpPipeline(..., output_type="pil")` gives them.
    """
    arrays = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [PIL.Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array) for array in arrays]


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> PIL.Image.Image:
    """(N, C, H, W) images in [0, 1] -> one PIL image, `nrow` per row (default: a square-ish grid), white gaps."""
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images.float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)  # (3, H', W')
    return to_pil_images((grid[:1] if images.shape[1] == 1 else grid)[None])[0]  # mode L for grey, RGB otherwise


__all__ = ["image_grid", "to_pil_images"]
