"""Configuration of the LARP VQ-VAE image tokenizer."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


CODEBOOK_INITS = ("kmeans", "sample", "random")


@strict
class LarpVQVAEConfig(PreTrainedConfig):
    r"""
    Configuration of a [`LarpVQVAEModel`]: a convolutional VQ-VAE that turns an `image_size`×`image_size` image into a
    `grid_size`×`grid_size` grid of codebook indices and back.

    The encoder downsamples by 2 once per entry of `hidden_channels`, so the defaults map 32×32 images to 8×8 grids
    (`downsample_factor = 2 ** len(hidden_channels)`, `grid_size = image_size // downsample_factor`).

    Args:
        in_channels (`int`, *optional*, defaults to 3):
            Channels of the images: 1 (grayscale) or 3 (RGB).
        image_size (`int`, *optional*, defaults to 32):
            Height and width of the (square) images the tokenizer reads and writes.
        hidden_channels (`list[int]`, *optional*, defaults to `[64, 128]`):
            Width of each stride-2 stage of the encoder (the decoder mirrors it). One entry per halving of the image.
        stem_channels (`int`, *optional*, defaults to 32):
            Width of the full-resolution convolution before the first stage (and after the decoder's last one).
        num_res_blocks (`int`, *optional*, defaults to 2):
            Residual blocks at the grid resolution, in the encoder and again in the decoder.
        res_hidden_channels (`int`, *optional*, defaults to 64):
            Bottleneck width inside each residual block.
        codebook_size (`int`, *optional*, defaults to 512):
            Number of codes. Small codebooks make the prior's job easier; 512 is the sweet spot at 8×8.
        codebook_dim (`int`, *optional*, defaults to 64):
            Dimension of each code vector (the encoder's output channels).
        commitment_weight (`float`, *optional*, defaults to 0.25):
            Weight β of the commitment loss ‖z_e − sg(e)‖² (van den Oord et al., 2017, §3.2).
        ema_decay (`float`, *optional*, defaults to 0.9):
            Decay of the exponential moving averages that update the codebook (Razavi et al., 2019, appendix). With
            EMA updates the codebook gets no gradient, so there is no codebook loss. The same averages decide when a
            code is dead: with VQ-VAE-2's 0.99 an unused code needs ~280 steps to fall below the threshold, too slow
            to repair the collapse of the first few steps (Fashion-MNIST, step 200: 17% of codes used at 0.99, 100%
            at 0.9).
        ema_epsilon (`float`, *optional*, defaults to 1e-5):
            Laplace smoothing of the EMA cluster sizes, so a code with no assignments never divides by zero.
        dead_code_threshold (`float`, *optional*, defaults to 1.0):
            A code whose EMA cluster size (assignments per batch, smoothed) falls below this is restarted on a random
            encoder output of the current batch. `0` turns restarts off. Under several processes the counts are those
            of the global batch (all processes together).
        codebook_init (`str`, *optional*, defaults to `"kmeans"`):
            How the codebook is initialised from the first training batch: `"kmeans"` (k-means on encoder outputs),
            `"sample"` (random encoder outputs) or `"random"` (keep the Gaussian initialisation; data is not looked at,
            and a code keeps its random vector until some encoder output is assigned to it).
        kmeans_iters (`int`, *optional*, defaults to 10):
            Lloyd iterations of the k-means initialisation.
        initializer_range (`float`, *optional*, defaults to 1.0):
            Standard deviation of the Gaussian the codebook starts from before any data is seen.

    Example:

    ```python
    >>> from larp_hf import LarpVQVAEConfig, LarpVQVAEModel
    >>> config = LarpVQVAEConfig(in_channels=1, image_size=32, codebook_size=256)
    >>> config.grid_size
    8
    >>> model = LarpVQVAEModel(config)
    ```
    """

    model_type = "larp_vqvae"

    in_channels: int = 3
    image_size: int = 32
    hidden_channels: list[int] | tuple[int, ...] = (64, 128)
    stem_channels: int = 32
    num_res_blocks: int = 2
    res_hidden_channels: int = 64
    codebook_size: int = 512
    codebook_dim: int = 64
    commitment_weight: float | int = 0.25
    ema_decay: float | int = 0.9
    ema_epsilon: float | int = 1e-5
    dead_code_threshold: float | int = 1.0
    codebook_init: str = "kmeans"
    kmeans_iters: int = 10
    initializer_range: float | int = 1.0

    def __post_init__(self, **kwargs):
        self.hidden_channels = list(self.hidden_channels)
        super().__post_init__(**kwargs)

    @property
    def downsample_factor(self) -> int:
        """How many pixels one code covers along each side."""
        return 2 ** len(self.hidden_channels)

    @property
    def grid_size(self) -> int:
        """Side of the code grid: `image_size // downsample_factor`."""
        return self.image_size // self.downsample_factor

    @property
    def num_codes_per_image(self) -> int:
        return self.grid_size**2

    def validate_architecture(self):
        """Part of `@strict` validation: refuse configs that cannot build a working tokenizer."""
        if self.in_channels not in (1, 3):
            raise ValueError(f"`in_channels` must be 1 (grayscale) or 3 (RGB), got {self.in_channels}.")
        if len(self.hidden_channels) == 0:
            raise ValueError("`hidden_channels` needs at least one entry (one per stride-2 stage).")
        if self.image_size % self.downsample_factor != 0:
            raise ValueError(
                f"`image_size`={self.image_size} is not divisible by the downsample factor {self.downsample_factor} "
                f"(2 ** len(hidden_channels), len(hidden_channels)={len(self.hidden_channels)}); pick an image size "
                "that is a multiple of it."
            )
        if self.codebook_size < 2:
            raise ValueError(f"`codebook_size` must be at least 2, got {self.codebook_size}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1), got {self.ema_decay}.")
        if self.dead_code_threshold < 0:
            raise ValueError(f"`dead_code_threshold` must be >= 0 (0 disables restarts), got {self.dead_code_threshold}.")
        if self.ema_epsilon <= 0:
            raise ValueError(f"`ema_epsilon` must be positive (it keeps empty codes from dividing by zero), got {self.ema_epsilon}.")
        if self.kmeans_iters < 1:
            raise ValueError(f"`kmeans_iters` must be at least 1, got {self.kmeans_iters}.")
        if self.codebook_init not in CODEBOOK_INITS:
            raise ValueError(f"`codebook_init` must be one of {CODEBOOK_INITS}, got {self.codebook_init!r}.")


# `save_pretrained` copies this file next to config.json and writes `auto_map`, so the folder loads without larp_hf
# (`AutoConfig.from_pretrained(folder, trust_remote_code=True)`). The file may import only from the vqvae folder
# (relatively), transformers, huggingface_hub, torch and the standard library.
LarpVQVAEConfig.register_for_auto_class()


__all__ = ["LarpVQVAEConfig"]
