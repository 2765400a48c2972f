"""
transformers' VQ image tokenizers as `ImageTokenizer`s: `JanusVQVAE` and `Emu3VQVAE` (images only).

Both are wrapped through their public methods and give raw codebook indices, never the vocabulary-remapped ids their
multimodal models feed the language model (`Emu3ImageVocabularyMapping`, Janus' `image_token_id` offsets).

- `JanusVQVAE.encode(...).image_tokens` is flat `(B*h*w,)`; `decode` wants `(B, h*w)` with `h = w =
  config.num_patches` (its `quant_state_dims`), so the grid is `num_patches` and not the class default: a folder
  saved from a `JanusConfig` holds the published grid (24 for the 384-pixel models).
- `Emu3VQVAE.encode` needs `image_sizes`, repeats an image over `temporal_downsample_factor` frames and returns a
  list of `(h, w)` code grids; `Emu3VQVAE.decode` takes raw codes `(B, h, w)` (its `Emu3Model.decode_image_tokens`
  takes vocabulary ids and is not used here).
"""

import logging

import torch
import torch.nn.functional as F
from transformers import Emu3VQVAE, JanusVQVAE

from .base import TokenizerAdapter, as_pair


logger = logging.getLogger(__name__)

# Both models were trained on images normalised with mean 0.5 and std 0.5 (the published processors' settings).
DEFAULT_VALUE_RANGE = (-1.0, 1.0)

# Emu3 reads images of any size (its processor picks one per image); nothing in a saved Emu3VQVAE folder names one.
# Without a recorded size the tokenizer uses a 32×32 grid (256 pixels at Emu3's f8) and says so.
EMU3_DEFAULT_GRID = 32


class JanusVQTokenizer(TokenizerAdapter):
    """
    An `ImageTokenizer` around a transformers `JanusVQVAE`.

    Args:
        model (`transformers.JanusVQVAE`): the model; held in float32, evaluation mode.
        value_range (`tuple[float, float]`, *optional*, defaults to `(-1.0, 1.0)`): the pixel range it reads.
        codebook_l2_norm (`bool`, *optional*, defaults to `True`):
            Pick each code by cosine similarity, i.e. nearest neighbour after L2-normalising the latent and the
            codebook, as the original Janus (LlamaGen) quantizer with `codebook_l2_norm=True` does and as
            `JanusVQVAE.decode` assumes (its `get_codebook_entry` L2-normalises the codes it looks up).
            transformers' `JanusVQVAE.encode` compares unnormalised vectors, which picks other codes for trained
            weights whose codebook rows are not of unit norm; `False` reproduces it.
    """

    adapter_name = "transformers.JanusVQVAE"
    library = "transformers"

    def __init__(self, model: JanusVQVAE, *, value_range=None, codebook_l2_norm: bool = True):
        if not isinstance(model, JanusVQVAE):
            raise ValueError(f"JanusVQTokenizer wraps a transformers JanusVQVAE, got {type(model).__name__}.")
        config = model.config
        grid = tuple(model.quantize.quant_state_dims)  # (num_patches, num_patches): the only grid `decode` accepts
        factor = 2 ** (len(config.channel_multiplier) - 1)  # every encoder level but the last downsamples
        super().__init__(
            model,
            codebook_size=config.num_embeddings,
            grid=grid,
            image_size=(grid[0] * factor, grid[1] * factor),
            num_channels=config.in_channels,
            value_range=DEFAULT_VALUE_RANGE if value_range is None else value_range,
        )
        self.codebook_l2_norm = bool(codebook_l2_norm)

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not self.codebook_l2_norm:
            return self.model.encode(pixel_values, return_dict=True).image_tokens  # (B*h*w,)
        # The same encoder and quant_conv `JanusVQVAE.encode` runs, without its unnormalised quantizer.
        latents = self.model.quant_conv(self.model.encoder(pixel_values))  # (B, D, h, w)
        flat = F.normalize(latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]), dim=-1)  # (B*h*w, D)
        codebook = F.normalize(self.model.quantize.embedding.weight, dim=-1)  # (K, D)
        # For unit vectors ‖z − e‖² = 2 − 2 z·e: the nearest code is the one of largest cosine similarity.
        return (flat @ codebook.t()).argmax(dim=1)

    def _decode(self, codes: torch.LongTensor) -> torch.Tensor:
        return self.model.decode(codes.reshape(codes.shape[0], -1))

    def _code_config(self) -> dict:
        return {"channel_multiplier": list(self.model.config.channel_multiplier)}

    def _extra_record(self) -> dict:
        return {"codebook_l2_norm": self.codebook_l2_norm}


class Emu3VQTokenizer(TokenizerAdapter):
    """
    An `ImageTokenizer` around a transformers `Emu3VQVAE`, for single images.

    Args:
        model (`transformers.Emu3VQVAE`): the model; held in float32, evaluation mode.
        value_range (`tuple[float, float]`, *optional*, defaults to `(-1.0, 1.0)`): the pixel range it reads.
        image_size (`int` or `(H, W)`, *optional*): the images it reads, a multiple of the downsample factor
            (`2 ** (len(channel_multiplier) - 1)`). Defaults to a 32×32 grid's worth, with a warning.
    """

    adapter_name = "transformers.Emu3VQVAE"
    library = "transformers"

    def __init__(self, model: Emu3VQVAE, *, value_range=None, image_size=None):
        if not isinstance(model, Emu3VQVAE):
            raise ValueError(f"Emu3VQTokenizer wraps a transformers Emu3VQVAE, got {type(model).__name__}.")
        config = model.config
        factor = model.spatial_scale_factor
        if image_size is None:
            image_size = EMU3_DEFAULT_GRID * factor
            logger.warning(
                "No image size recorded for this Emu3VQVAE: using %d×%d (a %d×%d grid). Pass image_size=... to choose.",
                image_size, image_size, EMU3_DEFAULT_GRID, EMU3_DEFAULT_GRID,
            )  # fmt: skip
        image_size = as_pair(image_size, "image_size")
        if image_size[0] % factor or image_size[1] % factor:
            raise ValueError(f"`image_size` {image_size} is not a multiple of this Emu3VQVAE's downsample factor {factor}.")
        super().__init__(
            model,
            codebook_size=config.codebook_size,
            grid=(image_size[0] // factor, image_size[1] // factor),
            image_size=image_size,
            num_channels=config.in_channels,
            value_range=DEFAULT_VALUE_RANGE if value_range is None else value_range,
        )

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        sizes = torch.tensor([list(self.image_size)] * pixel_values.shape[0])
        grids = self.model.encode(pixel_values, image_sizes=sizes, return_dict=True).image_tokens  # list of (h, w)
        return torch.stack(grids)

    def _decode(self, codes: torch.LongTensor) -> torch.Tensor:
        return self.model.decode(codes)  # (B, h, w) -> (B, C, H, W): the image path of Emu3VQVAE.decode

    def _code_config(self) -> dict:
        return {"temporal_downsample_factor": self.model.config.temporal_downsample_factor}


__all__ = ["DEFAULT_VALUE_RANGE", "EMU3_DEFAULT_GRID", "Emu3VQTokenizer", "JanusVQTokenizer"]
