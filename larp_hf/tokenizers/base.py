"""
The one image-tokenizer interface everything downstream uses, and the checks and identity hash its adapters share.

encode: pixel_values (B, C, H, W) float, in `value_range` -> codes (B, h, w) LongTensor of raw codebook indices
decode: codes (B, h, w) or (B, h*w) -> pixel_values (B, C, H, W) in `value_range`

`ImageTokenizer` is a structural `typing.Protocol`: code downstream checks `isinstance(obj, ImageTokenizer)` (or just
calls the members) and never tests for a concrete class. The library adapters in this package derive from
`TokenizerAdapter`, which holds the wrapped library model and implements the checks, the float32 policy, the hash and
the saved record once.
"""

import hashlib
import json
import os
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn


# The small JSON an adapter writes next to the library's own files: which adapter, and what the library leaves
# implicit (value range, image size, grid). `load_tokenizer` reads it first, then the library's config.json.
TOKENIZER_CONFIG_NAME = "larp_tokenizer.json"


@runtime_checkable
class ImageTokenizer(Protocol):
    """
    What a VQ image tokenizer offers the rest of larp_hf.

    Members:
        encode(pixel_values) -> codes:
            `pixel_values` (B, num_channels, *image_size) floats in `value_range` -> (B, *grid) `torch.long` raw
            codebook indices in `[0, codebook_size)` (never a vocabulary's remapped ids). Encodes in float32.
        decode(codes) -> pixel_values:
            (B, *grid) or (B, h*w) raster-order indices -> (B, num_channels, *image_size) floats in `value_range`.
            Raises `ValueError` on indices outside `[0, codebook_size)`.
        codebook_size (`int`): number of codes.
        grid (`tuple[int, int]`): `(h, w)` of the code grid; need not be square.
        image_size (`tuple[int, int]`): `(H, W)` of the images `encode` reads and `decode` writes.
        num_channels (`int`): channels of those images.
        value_range (`tuple[float, float]`): `(low, high)` of the pixel values, e.g. `(-1.0, 1.0)` or `(0.0, 1.0)`:
            what an image processor must produce for this tokenizer.
        tokenizer_hash() -> str:
            hex SHA-256 over exactly what decides the codes (the encoder and quantizer tensors as float32 in a fixed
            order, and the configuration that changes the codes), never training counters. Equal hashes give equal
            codes; priors and token datasets record it.
        save_pretrained(folder):
            writes a folder that `larp_hf.tokenizers.load_tokenizer(folder)` loads back.

    Example:

    ```python
    >>> import torch
    >>> from larp_hf.tokenizers import ImageTokenizer, wrap_tokenizer
    >>> table = torch.nn.Embedding(16, 3)
    >>> tokenizer = wrap_tokenizer(
    ...     table,
    ...     encode=lambda x: torch.cdist(x.permute(0, 2, 3, 1), table.weight[None]).argmin(-1),
    ...     decode=lambda codes: table(codes).permute(0, 3, 1, 2),
    ...     codebook_size=16, grid=(4, 4), image_size=(4, 4), num_channels=3, value_range=(-1.0, 1.0),
    ... )
    >>> isinstance(tokenizer, ImageTokenizer), tokenizer.encode(torch.zeros(1, 3, 4, 4)).shape
    (True, torch.Size([1, 4, 4]))
    ```
    """

    @property
    def codebook_size(self) -> int: ...

    @property
    def grid(self) -> tuple[int, int]: ...

    @property
    def image_size(self) -> tuple[int, int]: ...

    @property
    def num_channels(self) -> int: ...

    @property
    def value_range(self) -> tuple[float, float]: ...

    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor: ...

    def decode(self, codes: torch.LongTensor) -> torch.Tensor: ...

    def tokenizer_hash(self) -> str: ...

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> Any: ...


def as_pair(value, name: str) -> tuple[int, int]:
    """`8` or `(8, 16)` or `[8, 16]` -> `(h, w)` positive ints; anything else is a `ValueError` naming `name`."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"`{name}` must be a positive int or an (height, width) pair of them, got {value!r}.")
    return pair


def as_value_range(value) -> tuple[float, float]:
    """`(low, high)` with low < high, as floats."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`value_range` must be a (low, high) pair such as (-1.0, 1.0), got {value!r}.") from None
    if not low < high:
        raise ValueError(f"`value_range` must have low < high, got {value!r}.")
    return low, high


def check_pixel_values(pixel_values, num_channels: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Refuse what an `ImageTokenizer` cannot read; return `pixel_values` as float32."""
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError(f"`pixel_values` must be a (batch, channels, height, width) tensor, got {shape}.")
    if not pixel_values.is_floating_point():
        raise ValueError(f"`pixel_values` must be a floating-point tensor, got {pixel_values.dtype}.")
    channels, height, width = pixel_values.shape[1:]
    if channels != num_channels:
        raise ValueError(f"This tokenizer reads {num_channels}-channel images, got {channels} channels.")
    if (height, width) != tuple(image_size):
        raise ValueError(
            f"This tokenizer reads {image_size[0]}×{image_size[1]} images, got {height}×{width}: resize them first "
            "(or record another `image_size` for the tokenizer, if its network accepts it)."
        )
    if not bool(torch.isfinite(pixel_values).all()):
        raise ValueError("`pixel_values` hold NaN or infinite values; a tokenizer has no code for them.")
    return pixel_values.float()


def check_codes(codes, grid: tuple[int, int], codebook_size: int) -> torch.LongTensor:
    """(B, h, w) or (B, h*w) integer codes -> (B, h, w) `torch.long`; `ValueError` on a wrong shape or index."""
    height, width = grid
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"`codes` must be an integer tensor of codebook indices, got {getattr(codes, 'dtype', type(codes))}.")
    if codes.ndim == 2 and codes.shape[1] == height * width:
        codes = codes.reshape(codes.shape[0], height, width)  # raster order
    if codes.ndim != 3 or tuple(codes.shape[1:]) != (height, width):
        raise ValueError(
            f"`codes` must have shape (batch, {height}, {width}) or (batch, {height * width}), got {tuple(codes.shape)}."
        )
    if codes.numel() > 0 and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(
            f"`codes` must be indices in [0, {codebook_size}) (the codebook size), got values in "
            f"[{int(codes.min())}, {int(codes.max())}]. Sequences from a prior may hold special tokens (BOS, class "
            "ids) or vocabulary-remapped ids: strip or map them back to codebook indices before decoding."
        )
    return codes.long()


def hash_tensors(record: dict, tensors: dict[str, torch.Tensor]) -> str:
    """
    Hex SHA-256 of `record` (JSON, sorted keys) followed by each tensor's name and float32 bytes in sorted name order:
    the same values give the same hash whatever their dtype or device.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(record, sort_keys=True).encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_tokenizer_config(save_directory: str | os.PathLike, record: dict) -> None:
    """Write `record` as `TOKENIZER_CONFIG_NAME` in `save_directory` (created if missing)."""
    os.makedirs(save_directory, exist_ok=True)
    with open(os.path.join(save_directory, TOKENIZER_CONFIG_NAME), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _keep_float32(fn):
    """An `nn.Module._apply` function that still moves float tensors (device) but keeps them float32."""

    def apply(tensor):
        moved = fn(tensor)
        if tensor.is_floating_point() and moved.dtype != torch.float32:
            return tensor.detach().to(device=moved.device, dtype=torch.float32)
        return moved

    return apply


class TokenizerAdapter(nn.Module):
    """
    An `ImageTokenizer` around a library's model object (`self.model`), which it calls through its public methods.

    The model is held in float32 and stays float32 under `.to(dtype)`, `.half()` and `.bfloat16()` (only devices
    move): the tokenizer always encodes in float32, so casting never changes its codes or its hash. Subclasses set
    `adapter_name`, `library` and `code_modules` (the top-level submodules of `self.model` whose tensors decide the
    codes) and implement `_encode`, `_decode`, `_code_config` and `_save_model`.
    """

    adapter_name: ClassVar[str]
    library: ClassVar[str]
    code_modules: ClassVar[tuple[str, ...]] = ("encoder", "quant_conv", "quantize")

    def __init__(
        self,
        model: nn.Module,
        *,
        codebook_size: int,
        grid,
        image_size,
        num_channels: int,
        value_range,
    ):
        super().__init__()
        self.model = model.float().eval()
        self._codebook_size = int(codebook_size)
        self._grid = as_pair(grid, "grid")
        self._image_size = as_pair(image_size, "image_size")
        self._num_channels = int(num_channels)
        self._value_range = as_value_range(value_range)
        if self._image_size[0] % self._grid[0] or self._image_size[1] % self._grid[1]:
            raise ValueError(f"`image_size` {self._image_size} is not a multiple of the code grid {self._grid}.")

    def _apply(self, fn, recurse=True):
        return super()._apply(_keep_float32(fn), recurse)

    @property
    def codebook_size(self) -> int:
        return self._codebook_size

    @property
    def grid(self) -> tuple[int, int]:
        return self._grid

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    @property
    def num_channels(self) -> int:
        return self._num_channels

    @property
    def value_range(self) -> tuple[float, float]:
        return self._value_range

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """(B, C, H, W) floats in `value_range` -> (B, h, w) raw codebook indices (`torch.long`)."""
        pixel_values = check_pixel_values(pixel_values, self.num_channels, self.image_size).to(self.device)
        with torch.autocast(device_type=pixel_values.device.type, enabled=False):
            codes = self._encode(pixel_values)
        return codes.reshape(pixel_values.shape[0], *self.grid).long()

    @torch.no_grad()
    def decode(self, codes: torch.LongTensor) -> torch.Tensor:
        """(B, h, w) or (B, h*w) raw codebook indices -> (B, C, H, W) float32 pixels in `value_range`."""
        codes = check_codes(codes, self.grid, self.codebook_size).to(self.device)
        with torch.autocast(device_type=codes.device.type, enabled=False):
            return self._decode(codes)

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """float32 (B, C, H, W) -> codes of any shape holding B*h*w indices in raster order."""
        raise NotImplementedError

    def _decode(self, codes: torch.LongTensor) -> torch.Tensor:
        """Checked (B, h, w) codes -> (B, C, H, W) pixels."""
        raise NotImplementedError

    def _code_config(self) -> dict:
        """The fields of the library's config that change the codes but not the names or shapes of the tensors."""
        raise NotImplementedError

    def _save_model(self, save_directory: str, **kwargs) -> None:
        """Write the library's own folder (its `save_pretrained`)."""
        self.model.save_pretrained(save_directory, **kwargs)

    def _extra_record(self) -> dict:
        """Adapter options a subclass records in `TOKENIZER_CONFIG_NAME` and in the hash (none by default)."""
        return {}

    def code_tensors(self) -> dict[str, torch.Tensor]:
        """Name -> tensor of every parameter and buffer of the modules that decide the codes (`code_modules`)."""
        tensors = {}
        for module_name in self.code_modules:
            module = getattr(self.model, module_name)
            for name, tensor in module.state_dict(keep_vars=True).items():
                tensors[f"{module_name}.{name}"] = tensor.detach()
        return tensors

    def tokenizer_hash(self) -> str:
        """
        Hex SHA-256 over what decides the codes: the adapter, `image_size`, `value_range`, the code-deciding config
        fields and the tensors of `code_modules` as float32 in sorted order. The decoder is left out: it changes the
        pixels, not the codes.
        """
        record = {
            "adapter": self.adapter_name,
            "image_size": list(self.image_size),
            "value_range": list(self.value_range),
            "config": self._code_config(),
            **self._extra_record(),
        }
        return hash_tensors(record, self.code_tensors())

    def tokenizer_record(self) -> dict:
        """What `save_pretrained` writes to `TOKENIZER_CONFIG_NAME`."""
        return {
            "adapter": self.adapter_name,
            "library": self.library,
            "class": type(self.model).__name__,
            "codebook_size": self.codebook_size,
            "grid": list(self.grid),
            "image_size": list(self.image_size),
            "num_channels": self.num_channels,
            "value_range": list(self.value_range),
            "tokenizer_hash": self.tokenizer_hash(),
            **self._extra_record(),
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """The library's own folder (loadable by the library alone) plus `TOKENIZER_CONFIG_NAME`."""
        save_directory = os.fspath(save_directory)
        self._save_model(save_directory, **kwargs)
        write_tokenizer_config(save_directory, self.tokenizer_record())

    def extra_repr(self) -> str:
        return (
            f"adapter={self.adapter_name!r}, codebook_size={self.codebook_size}, grid={self.grid}, "
            f"image_size={self.image_size}, value_range={self.value_range}"
        )


__all__ = [
    "ImageTokenizer",
    "TOKENIZER_CONFIG_NAME",
    "TokenizerAdapter",
    "as_pair",
    "as_value_range",
    "check_codes",
    "check_pixel_values",
    "hash_tensors",
    "write_tokenizer_config",
]
