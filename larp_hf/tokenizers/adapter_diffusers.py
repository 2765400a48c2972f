"""
diffusers `VQModel` (aMUSEd, open-muse VQGAN, Kandinsky MoVQ, LDM VQ-f4/f8) as an `ImageTokenizer`.

`VQModel.encode` returns the latents before quantization, not codes. The codes come from its quantizer
(`model.quantize(latents)[2][2]`, flat (B*h*w,) in raster order: `VQModel` builds its quantizer with
`sane_index_shape=False` and `remap=None`). Decoding from codes looks each code up with the quantizer's
`get_codebook_entry(indices, shape=(B, h, w, D))` and runs `decode(..., force_not_quantize=True)`; when the config says
`lookup_from_codebook` (aMUSEd), `decode` does that lookup itself and takes the indices.

diffusers is imported only when this file is.
"""

import logging

import torch
from diffusers import VQModel

from .base import TokenizerAdapter, as_pair


logger = logging.getLogger(__name__)

# diffusers' own image processor (`VaeImageProcessor(do_normalize=True)`) maps images to [-1, 1], the range the LDM,
# open-muse and MoVQ VQGANs were trained in. aMUSEd's pipelines build theirs with `do_normalize=False`: [0, 1].
DEFAULT_VALUE_RANGE = (-1.0, 1.0)
AMUSED_VALUE_RANGE = (0.0, 1.0)
AMUSED_PIPELINES = ("AmusedPipeline", "AmusedImg2ImgPipeline", "AmusedInpaintPipeline")

# Fields of `VQModel`'s config that change the codes without changing any tensor's name or shape.
CODE_CONFIG_FIELDS = ("act_fn", "norm_num_groups", "down_block_types")


def downsample_factor(config) -> int:
    """Each encoder block but the last halves height and width (diffusers `Encoder`: `add_downsample=not is_final`)."""
    return 2 ** (len(config.block_out_channels) - 1)


class DiffusersVQTokenizer(TokenizerAdapter):
    """
    An `ImageTokenizer` around a diffusers `VQModel`.

    Args:
        model (`diffusers.VQModel`): the model; held in float32, evaluation mode.
        value_range (`tuple[float, float]`, *optional*, defaults to `(-1.0, 1.0)`):
            The pixel range the model was trained on: `(0.0, 1.0)` for aMUSEd's VQGAN, `(-1.0, 1.0)` for the others.
        image_size (`int` or `(H, W)`, *optional*, defaults to the config's `sample_size`):
            The images the tokenizer reads; any multiple of the downsample factor the network accepts.

    Example:

    ```python
    >>> import torch
    >>> from diffusers import VQModel
    >>> from larp_hf.tokenizers import DiffusersVQTokenizer
    >>> model = VQModel(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
    ...                 up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, num_vq_embeddings=32, sample_size=16)
    >>> tokenizer = DiffusersVQTokenizer(model)
    >>> tokenizer.encode(torch.zeros(1, 3, 16, 16)).shape, tokenizer.grid
    (torch.Size([1, 8, 8]), (8, 8))
    ```
    """

    adapter_name = "diffusers.VQModel"
    library = "diffusers"

    def __init__(self, model: VQModel, *, value_range=None, image_size=None):
        if not isinstance(model, VQModel):
            raise ValueError(f"DiffusersVQTokenizer wraps a diffusers VQModel, got {type(model).__name__}.")
        config = model.config
        if image_size is None:
            image_size = config.sample_size
            logger.info("No image size given for the VQModel: using its config's sample_size %s.", image_size)
        image_size = as_pair(image_size, "image_size")
        factor = downsample_factor(config)
        if image_size[0] % factor or image_size[1] % factor:
            raise ValueError(f"`image_size` {image_size} is not a multiple of this VQModel's downsample factor {factor}.")
        if value_range is None:
            value_range = DEFAULT_VALUE_RANGE
            logger.warning(
                "No value range recorded for this VQModel: assuming %s (diffusers' VaeImageProcessor). aMUSEd's VQGAN "
                "reads [0, 1]: pass value_range=(0.0, 1.0) for it.",
                value_range,
            )
        super().__init__(
            model,
            codebook_size=config.num_vq_embeddings,
            grid=(image_size[0] // factor, image_size[1] // factor),
            image_size=image_size,
            num_channels=config.in_channels,
            value_range=value_range,
        )

    @property
    def embed_dim(self) -> int:
        return self.model.quantize.vq_embed_dim

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        latents = self.model.encode(pixel_values).latents  # (B, D, h, w), after quant_conv
        _, _, (_, _, indices) = self.model.quantize(latents)  # (B*h*w,) raster order
        return indices

    def _decode(self, codes: torch.LongTensor) -> torch.Tensor:
        batch = codes.shape[0]
        shape = (batch, *self.grid, self.embed_dim)  # (B, h, w, D), as get_codebook_entry wants it
        if self.model.config.lookup_from_codebook:
            return self.model.decode(codes, force_not_quantize=True, shape=shape).sample
        quantized = self.model.quantize.get_codebook_entry(codes.reshape(-1), shape)  # (B, D, h, w)
        return self.model.decode(quantized, force_not_quantize=True).sample

    def _code_config(self) -> dict:
        return {name: _jsonable(self.model.config[name]) for name in CODE_CONFIG_FIELDS}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


__all__ = ["DiffusersVQTokenizer", "AMUSED_PIPELINES", "AMUSED_VALUE_RANGE", "DEFAULT_VALUE_RANGE"]
