"""Image processor of the LARP tokenizer: any image in, the tokenizer's normalised tensors out, and back."""

import numpy as np
import PIL.Image
import torch
from torchvision.transforms.v2 import functional as tvF
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_transforms import group_images_by_shape, reorder_images
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs


OUTPUT_TYPES = ("pil", "np", "pt")
# ITU-R 601-2 luma, the weights PIL's convert("L") uses, so arrays and PIL images turn grey the same way.
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def check_pixel_values(pixel_values: torch.Tensor, config) -> None:
    """
    Raise a `ValueError` saying what to do unless `pixel_values` is what [`LarpImageProcessor`] makes for the
    tokenizer of `config` (a `LarpVQVAEConfig`): a floating-point (batch, `in_channels`, `image_size`, `image_size`)
    tensor of finite values. `LarpVQVAEModel.encode` and `forward` run it on their input.
    """
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError(
            f"`pixel_values` must be a (batch, channels, height, width) tensor, got {shape}. "
            "Use LarpImageProcessor to turn images into model inputs."
        )
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"`pixel_values` must be a floating-point tensor normalised like LarpImageProcessor's output, got "
            f"{pixel_values.dtype}. Pass the images through LarpImageProcessor first."
        )
    channels, height, width = pixel_values.shape[1:]
    if channels != config.in_channels:
        raise ValueError(
            f"This tokenizer expects {config.in_channels}-channel images but got {channels} channels. "
            f"Convert the images first, e.g. LarpImageProcessor(num_channels={config.in_channels})."
        )
    if (height, width) != (config.image_size, config.image_size):
        problem = "too small for" if height < config.image_size or width < config.image_size else "do not match"
        raise ValueError(
            f"Images of {height}×{width} pixels are {problem} this tokenizer's {config.grid_size}×{config.grid_size} "
            f"grid, which needs {config.image_size}×{config.image_size} inputs. Resize (or pad) them with "
            "LarpImageProcessor, which does this for you."
        )
    finite = torch.isfinite(pixel_values)
    if not bool(finite.all()):
        num_nan = int(torch.isnan(pixel_values).sum())
        raise ValueError(
            f"`pixel_values` hold non-finite values ({num_nan} NaN, {int((~finite).sum()) - num_nan} infinite) "
            f"in {int((~finite).flatten(1).any(1).sum())} of {pixel_values.shape[0]} images; a tokenizer has no "
            "code for them. LarpImageProcessor never produces them: look at what was done to the tensor after it."
        )


def to_pil_images(images: torch.Tensor) -> list[PIL.Image.Image]:
    """
    (N, C, H, W) images in [0, 1], C = 1 or 3 -> N PIL images, mode L for one channel and RGB for three: the values
    clamped to [0, 1], scaled to 0-255 and rounded. The one tensor-to-PIL conversion of larp_hf (it lives here because
    this file travels alone into saved tokenizer folders).
    """
    arrays = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [PIL.Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array) for array in arrays]


class LarpImageProcessorKwargs(ImagesKwargs, total=False):
    """
    num_channels (`int`, *optional*, defaults to 3):
        Channels of the output: 1 converts every image to grayscale, 3 to RGB.
    pad_value (`float`, *optional*, defaults to 0):
        Fill value (on the 0–255 scale) of the border added when `do_pad=True`.
    native_size (`dict[str, int]`, *optional*):
        With `do_pad=True`, the size of the dataset's images inside the padded `size`; `postprocess` crops the
        border back off, so outputs come back at that size.
    input_scale (`float`, *optional*):
        The input value that means full intensity (white), the same for every image of a dataset: e.g. 255 for
        float images on the 0-255 scale, 4095 for 12-bit data. `None` decides it by type, never by the values:
        see `input_scale_of`.
    """

    num_channels: int | None
    pad_value: float | None
    native_size: dict | None
    input_scale: int | float | None


class LarpImageProcessor(TorchvisionBackend):
    r"""
    Prepares images for [`LarpVQVAEModel`] and turns its outputs back into images.

    Accepts PIL images of any mode (`1`, `L`, `P`, `RGB`, `RGBA`, `I;16`, ...), NumPy arrays and torch tensors
    (`(H, W)`, `(H, W, C)` or `(C, H, W)`; bool, integers, floats) of any size, one or a list. The value that means
    white is decided by the type, never guessed from an image's values, so every image of a dataset is read on one
    scale (`input_scale_of` says which): 255 for 8-bit images and plain integer arrays, 65535 for 16-bit ones (PIL
    modes `I;16*` and `I`, the modes of 16-bit PNGs; uint16/int16 arrays), 1.0 for floats; `input_scale` overrides
    it. A value outside [0, scale] (a negative pixel, a float image on the 0-255 scale, a 16-bit value in a plain
    integer array) is refused, naming the fix, rather than clamped. Each
    image is converted to `num_channels` (alpha is composited onto white; RGB→grey uses PIL's luma weights), then
    either resized to `size` (`do_resize=True`, the default) or, with `do_pad=True`, shrunk if needed to fit `size`
    keeping its aspect ratio and padded to it, centred. Pixels are then rescaled to [0, 1] and normalised with
    `image_mean`/`image_std` (by default to [-1, 1]).

    Args:
        num_channels (`int`, *optional*, defaults to 3): 1 for grayscale output, 3 for RGB.
        do_resize (`bool`, *optional*, defaults to `True`): resize every image to `size`.
        size (`dict[str, int]`, *optional*, defaults to `{"height": 32, "width": 32}`): the model's input size.
        resample (`PILImageResampling`, *optional*, defaults to `BILINEAR`): resampling filter (antialiased).
        do_pad (`bool`, *optional*, defaults to `False`): letterbox instead of stretching (takes precedence over `do_resize`).
        do_center_crop (`bool`, *optional*, defaults to `False`): first crop each image to the largest centred region
            of `size`'s aspect ratio (a square for a square `size`), as diffusers' `--center_crop` does, so that
            non-square images are neither stretched nor letterboxed.
        pad_value (`float`, *optional*, defaults to 0): border value on the 0–255 scale.
        input_scale (`float`, *optional*): the input value of white for every image (see above); `None` (the
            default) decides it by type.
        native_size (`dict[str, int]`, *optional*): with `do_pad=True`, the dataset's own image size (e.g. 28×28
            Fashion-MNIST padded losslessly to 32×32): `postprocess` returns images at this size, centred crops of
            the model's output. `native_size_for` computes it.
        do_rescale (`bool`, *optional*, defaults to `True`), rescale_factor (`float`, defaults to 1/255).
        do_normalize (`bool`, *optional*, defaults to `True`), image_mean / image_std (defaults to 0.5 / 0.5).

    Example:

    ```python
    >>> import PIL.Image
    >>> from larp_hf import LarpImageProcessor
    >>> processor = LarpImageProcessor(num_channels=1, size={"height": 32, "width": 32})
    >>> batch = processor([PIL.Image.new("RGB", (28, 28), "white")], return_tensors="pt")
    >>> batch["pixel_values"].shape, batch["pixel_values"].max().item()
    (torch.Size([1, 1, 32, 32]), 1.0)
    >>> processor.postprocess(batch["pixel_values"])[0].size
    (32, 32)
    ```
    """

    valid_kwargs = LarpImageProcessorKwargs
    model_input_names = ["pixel_values"]

    num_channels = 3
    pad_value = 0.0
    input_scale = None
    do_resize = True
    size = {"height": 32, "width": 32}
    resample = PILImageResampling.BILINEAR
    do_pad = False
    native_size = None
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = 0.5
    image_std = 0.5
    do_center_crop = False
    do_convert_rgb = False

    def __init__(self, **kwargs):
        if kwargs.get("do_center_crop") and kwargs.get("crop_size") is None:
            # The crop's size is the output size (transformers checks that a crop has one).
            kwargs["crop_size"] = dict(kwargs.get("size") or self.size)
        super().__init__(**kwargs)
        if self.num_channels not in (1, 3):
            raise ValueError(f"`num_channels` must be 1 (grayscale) or 3 (RGB), got {self.num_channels}.")
        if self.native_size is not None:
            native = dict(self.native_size)
            if set(native) != {"height", "width"} or not all(isinstance(v, int) and v > 0 for v in native.values()):
                raise ValueError(f"`native_size` must be {{'height': H, 'width': W}} with positive integers, got {native}.")
            if native["height"] > self.size["height"] or native["width"] > self.size["width"]:
                raise ValueError(
                    f"`native_size` {native['height']}×{native['width']} does not fit in `size` "
                    f"{self.size['height']}×{self.size['width']}: it is the image inside the padding."
                )
            if not self.do_pad:
                raise ValueError("`native_size` is the image inside the padding: it needs `do_pad=True`.")
            self.native_size = native
        self._check_input_scale(self.input_scale)

    @staticmethod
    def _check_input_scale(input_scale):
        if input_scale is None:
            return
        is_number = isinstance(input_scale, (int, float)) and not isinstance(input_scale, bool)
        if not is_number or not (np.isfinite(input_scale) and input_scale > 0):
            raise ValueError(
                f"`input_scale` is the input value that means white (e.g. 1.0, 255 or 65535), a finite number > 0; "
                f"got {input_scale!r}."
            )

    @property
    def output_size(self) -> dict[str, int]:
        """The size of `postprocess`'s images: `native_size` when set, else `size`."""
        return dict(self.native_size or {"height": self.size["height"], "width": self.size["width"]})

    def native_size_for(self, height: int, width: int) -> dict[str, int]:
        """The size an image of `height`×`width` has inside the padding (`do_pad=True`): shrunk to fit, never enlarged."""
        scale = min(self.size["height"] / height, self.size["width"] / width, 1.0)
        if scale == 1.0:
            return {"height": height, "width": width}
        return {"height": max(1, round(height * scale)), "width": max(1, round(width * scale))}

    def crop_padding(self, images: torch.Tensor) -> torch.Tensor:
        """(..., H, W) at `size` -> (..., h, w) at `native_size`: the centred crop `do_pad` put the image in."""
        if self.native_size is None:
            return images
        height, width = images.shape[-2:]
        native_height, native_width = self.native_size["height"], self.native_size["width"]
        top, left = (height - native_height) // 2, (width - native_width) // 2
        return images[..., top : top + native_height, left : left + native_width]

    @classmethod
    def from_vqvae_config(cls, config, **kwargs) -> "LarpImageProcessor":
        """The processor that matches a [`LarpVQVAEConfig`]'s `in_channels` and `image_size`."""
        kwargs.setdefault("num_channels", config.in_channels)
        kwargs.setdefault("size", {"height": config.image_size, "width": config.image_size})
        return cls(**kwargs)

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> "LarpImageProcessor":
        """
        The processor that makes what an image tokenizer (`larp_hf.tokenizers.ImageTokenizer`, of any library) reads:
        images resized to its `image_size` (H, W), converted to its `num_channels`, and mapped from [0, 1] onto its
        `value_range` (low, high) by the normalisation `(x - mean) / std` with `mean = -low / (high - low)` and
        `std = 1 / (high - low)`: (-1, 1) gives mean = std = 0.5, this processor's defaults, so a `LarpVQVAEModel`
        gets the processor `from_vqvae_config` makes. `kwargs` override any of these.

        Example:

        ```python
        >>> import torch
        >>> from larp_hf import LarpImageProcessor, wrap_tokenizer
        >>> tokenizer = wrap_tokenizer(torch.nn.Identity(), encode=lambda x: x, decode=lambda c: c, codebook_size=16,
        ...                            grid=(2, 3), image_size=(8, 12), num_channels=3, value_range=(0.0, 1.0))
        >>> pixel_values = LarpImageProcessor.from_tokenizer(tokenizer)([torch.ones(1, 5, 5)], return_tensors="pt")
        >>> pixel_values["pixel_values"].shape, pixel_values["pixel_values"].max().item()
        (torch.Size([1, 3, 8, 12]), 1.0)
        ```
        """
        height, width = tokenizer.image_size
        low, high = (float(value) for value in tokenizer.value_range)
        kwargs.setdefault("num_channels", tokenizer.num_channels)
        kwargs.setdefault("size", {"height": height, "width": width})
        kwargs.setdefault("image_mean", -low / (high - low))
        kwargs.setdefault("image_std", 1.0 / (high - low))
        return cls(**kwargs)

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        # (H, W) grey arrays are images too: give them a channel axis before transformers flattens the batch.
        def with_channel_axis(image):
            return image[None] if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 2 else image

        if isinstance(images, (list, tuple)):
            images = [with_channel_axis(image) for image in images]
        else:
            images = with_channel_axis(images)
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def process_image(
        self, image, num_channels: int | None = None, input_scale: float | None = None, **kwargs
    ) -> torch.Tensor:
        """One raw image -> (num_channels, H, W) float32 tensor on the 0–255 scale."""
        num_channels = num_channels or self.num_channels
        input_scale = self.input_scale if input_scale is None else input_scale
        self._check_input_scale(input_scale)
        if isinstance(image, PIL.Image.Image):
            if image.mode not in SIXTEEN_BIT_PIL_MODES + ("F",):
                image = self._to_8_bit_mode(image)
            tensor = self._array_to_tensor(torch.from_numpy(np.array(image)), input_scale or self.input_scale_of(image))
        elif isinstance(image, (np.ndarray, torch.Tensor)):
            array = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image)
            tensor = self._array_to_tensor(array, input_scale or self.input_scale_of(array))
        else:
            raise TypeError(f"Expected a PIL image, a NumPy array or a torch tensor, got {type(image).__name__}.")
        return self._convert_channels(tensor, num_channels)

    @staticmethod
    def input_scale_of(image) -> float:
        """
        The value that means white in `image` (a PIL image, a NumPy array or a torch tensor) when no `input_scale`
        is given, decided by its type alone, so that every image of a dataset is read on the same scale: 65535 for
        16-bit data (PIL modes `I;16*` and `I`, the modes a 16-bit PNG opens in; uint16 and int16 arrays), 1.0 for
        floats (PIL mode `F` too), 255 for everything else (8-bit PIL modes, uint8 and bool arrays, and plain
        integer arrays such as NumPy's default int64: pass `input_scale` for those when they hold more bits).
        """
        if isinstance(image, PIL.Image.Image):
            return 65535.0 if image.mode in SIXTEEN_BIT_PIL_MODES else 1.0 if image.mode == "F" else 255.0
        dtype = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image).dtype
        if dtype.is_floating_point:
            return 1.0
        return 65535.0 if dtype in (torch.uint16, torch.int16) else 255.0

    @staticmethod
    def _to_8_bit_mode(image: PIL.Image.Image) -> PIL.Image.Image:
        if image.mode == "P" or image.mode == "PA":
            return image.convert("RGBA")
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            return image.convert("RGBA" if "A" in image.getbands() else "RGB")
        return image

    @staticmethod
    def _array_to_tensor(array: torch.Tensor, input_scale: float = 255.0) -> torch.Tensor:
        """
        (H, W), (H, W, C) or (C, H, W) array of any dtype whose white is `input_scale` -> (C, H, W) float32 on the
        0–255 scale; values outside [0, input_scale] are refused.
        """
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3:
            if array.shape[-1] in (1, 2, 3, 4) and array.shape[0] not in (1, 2, 3, 4):
                array = array.permute(2, 0, 1)
            elif array.shape[0] not in (1, 2, 3, 4):
                raise ValueError(
                    f"Cannot tell the channel axis of an image of shape {tuple(array.shape)}: expected (H, W), "
                    "(H, W, C) or (C, H, W) with C in 1–4."
                )
        else:
            raise ValueError(f"An image must have 2 or 3 dimensions, got shape {tuple(array.shape)}.")
        if array.dtype == torch.bool:
            return array.float() * 255.0
        if array.dtype == torch.uint8 and input_scale == 255:
            return array.float()
        if array.is_floating_point():
            if not torch.isfinite(array).all():
                num_nan = int(torch.isnan(array).sum())
                raise ValueError(
                    f"An image holds non-finite values ({num_nan} NaN, {int((~torch.isfinite(array)).sum()) - num_nan} "
                    "infinite): fix or drop it; no code can stand for a pixel that is not a number."
                )
            if array.numel() > 0 and array.min() < 0:
                raise ValueError(
                    f"Float images must hold values in [0, {input_scale:g}], got a minimum of "
                    f"{array.min().item():.3f}. Model-space tensors in [-1, 1] go back to images with `postprocess`, "
                    "not through the processor."
                )
        else:
            array = array.to(torch.int64)  # torch has no min()/max() for uint16
            if array.numel() > 0 and array.min() < 0:
                raise ValueError(
                    f"An integer image holds negative values (down to {array.min().item()}); pixel values count up "
                    "from 0 (black). Shift or convert the data to 0 … white first."
                )
        if array.numel() > 0 and array.max() > input_scale:
            kind = "float" if array.is_floating_point() else "these integer"
            raise ValueError(
                f"An image holds values up to {array.max().item():g}, above {input_scale:g}, the value of white for "
                f"{kind} images; pass `input_scale`, the value of white for the whole dataset (e.g. 255 for floats on "
                "the 0-255 scale, 65535 for 16-bit data), rather than have each image scaled by its own maximum."
            )
        if input_scale == 255:
            return array.float()
        return (array.double() * (255.0 / input_scale)).float()

    @staticmethod
    def _convert_channels(image: torch.Tensor, num_channels: int) -> torch.Tensor:
        channels = image.shape[0]
        if channels in (2, 4):
            # Grey+alpha or RGB+alpha: composite onto white, as transformers' convert_to_rgb does.
            alpha = image[-1:] / 255.0
            image = image[:-1] * alpha + 255.0 * (1 - alpha)
            channels -= 1
        if num_channels == 3 and channels == 1:
            image = image.expand(3, -1, -1)
        elif num_channels == 1 and channels == 3:
            image = (image * _LUMA).sum(0, keepdim=True)
        return image.contiguous()

    @staticmethod
    def _crop_to_aspect(image: torch.Tensor, size: SizeDict) -> torch.Tensor:
        """The largest centred crop of (..., H, W) with the aspect ratio of `size`."""
        height, width = image.shape[-2:]
        scale = min(height / size.height, width / size.width)
        crop_height, crop_width = max(1, round(size.height * scale)), max(1, round(size.width * scale))
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        return image[..., top : top + crop_height, left : left + crop_width]

    def _fit_and_pad(self, image: torch.Tensor, size: SizeDict, resample, pad_value: float) -> torch.Tensor:
        """Shrink (never enlarge) to fit inside `size` keeping the aspect ratio, then pad to `size`, centred."""
        height, width = image.shape[-2:]
        scale = min(size.height / height, size.width / width, 1.0)
        if scale < 1.0:
            new_size = SizeDict(height=max(1, round(height * scale)), width=max(1, round(width * scale)))
            image = self.resize(image, new_size, resample=resample)
            height, width = image.shape[-2:]
        # Centred as `crop_padding` expects: the extra pixel of an odd border goes to the bottom/right.
        top, left = (size.height - height) // 2, (size.width - width) // 2
        padding = [left, top, size.width - width - left, size.height - height - top]
        return tvF.pad(image, padding, fill=pad_value)

    def _preprocess(
        self,
        images: list[torch.Tensor],
        do_resize: bool,
        size: SizeDict,
        resample,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        do_pad: bool | None = None,
        pad_value: float | None = None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        grouped, index = group_images_by_shape(images, disable_grouping=False)
        processed = {}
        do_center_crop = kwargs.get("do_center_crop", self.do_center_crop)
        for shape, stacked in grouped.items():  # stacked: (N, C, H, W), all of one shape
            if do_center_crop:
                stacked = self._crop_to_aspect(stacked, size)
            if do_pad:
                stacked = self._fit_and_pad(stacked, size, resample, self.pad_value if pad_value is None else pad_value)
            elif do_resize:
                stacked = self.resize(stacked, size, resample=resample)
            # Bicubic/Lanczos overshoot; clamp so the normalised range is exactly what the decoder learns.
            stacked = stacked.clamp(0.0, 255.0)
            if do_rescale:
                stacked = stacked * rescale_factor
            if do_normalize:
                stacked = (stacked - self._as_channel_tensor(image_mean)) / self._as_channel_tensor(image_std)
            processed[shape] = stacked
        images = reorder_images(processed, index)
        shapes = {tuple(image.shape) for image in images}
        if return_tensors is not None and len(shapes) > 1:
            raise ValueError(
                f"Images ended up with different shapes {sorted(shapes)}; enable `do_resize` or `do_pad` to stack them."
            )
        if return_tensors is not None:
            images = torch.stack(images)
        return BatchFeature(data={"pixel_values": images}, tensor_type=return_tensors)

    @staticmethod
    def _as_channel_tensor(value) -> torch.Tensor:
        return torch.as_tensor(value, dtype=torch.float32).reshape(-1, 1, 1)  # broadcasts over (C, H, W)

    def postprocess(self, pixel_values: torch.Tensor, output_type: str = "pil", native_size: bool = True):
        """
        Inverse of the normalisation: (B, C, H, W) model-space tensors -> images.

        `output_type="pil"` gives a list of PIL images (mode `L` or `RGB`), `"np"` a (B, H, W, C) float array in
        [0, 1] and `"pt"` a (B, C, H, W) float tensor in [0, 1]. With `native_size` set on the processor, images come
        back at that size (the padding cropped off) unless `native_size=False`.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if pixel_values.ndim == 3:
            pixel_values = pixel_values[None]
        images = pixel_values.detach().float().cpu()
        if native_size:
            images = self.crop_padding(images)
        if self.do_normalize:
            images = images * self._as_channel_tensor(self.image_std) + self._as_channel_tensor(self.image_mean)
        if not self.do_rescale:
            images = images / 255.0
        images = images.clamp(0.0, 1.0)
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
        if output_type == "np":
            return array
        return to_pil_images(images)


# PIL modes of 16-bit grey data: a 16-bit PNG opens as `I;16` (older Pillow: `I`); both are read on 0-65535.
SIXTEEN_BIT_PIL_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


# `save_pretrained` copies this file next to preprocessor_config.json and writes `auto_map`, so
# `AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)` works without larp_hf. Keep the imports to
# transformers, torch, torchvision, NumPy, PIL and the standard library.
LarpImageProcessor.register_for_auto_class()


__all__ = ["LarpImageProcessor", "check_pixel_values", "to_pil_images"]
