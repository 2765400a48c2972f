"""
Any `nn.Module` as an `ImageTokenizer`: `wrap_tokenizer(module, encode=..., decode=..., ...)`.

The module's weights are saved with safetensors; `load_tokenizer(folder, module=...)` loads them back into a module
you build (a saved folder never names code to import or run).
"""

import os
from collections.abc import Callable, Sequence

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from .base import TokenizerAdapter, write_tokenizer_config


WEIGHTS_NAME = "model.safetensors"


class WrappedTokenizer(TokenizerAdapter):
    """
    An `ImageTokenizer` around any `nn.Module` and two functions; made by `wrap_tokenizer`.

    `encode(pixel_values)` must return `B*h*w` integer codes per batch in raster order (any shape: `(B, h, w)`,
    `(B, h*w)` or flat); `decode(codes)` gets checked `(B, h, w)` `torch.long` codes and returns `(B, C, H, W)` pixels.
    Either may be a callable or the name of a method of the module (a name is recorded when saved; a callable must be
    passed again when loading).

    The hash covers every floating-point parameter and buffer of the module (decoder included, since nothing says which
    ones decide the codes) except those whose name contains an entry of `hash_ignore`: list training-only state there
    (a usage counter such as LlamaGen's `codebook_used`). Integer buffers (BatchNorm's `num_batches_tracked`) are
    counters and never hashed.
    """

    adapter_name = "wrapped"
    library = "torch"

    def __init__(
        self,
        module: nn.Module,
        *,
        encode: Callable | str,
        decode: Callable | str,
        codebook_size: int,
        grid,
        image_size,
        num_channels: int,
        value_range,
        hash_ignore: Sequence[str] = (),
    ):
        super().__init__(
            module,
            codebook_size=codebook_size,
            grid=grid,
            image_size=image_size,
            num_channels=num_channels,
            value_range=value_range,
        )
        for name, function in (("encode", encode), ("decode", decode)):
            if isinstance(function, str) and not callable(getattr(module, function, None)):
                raise ValueError(f"`{name}={function!r}` names no method of {type(module).__name__}.")
            if not isinstance(function, str) and not callable(function):
                raise ValueError(f"`{name}` must be a callable or a method name, got {type(function).__name__}.")
        self.encode_function = encode
        self.decode_function = decode
        self.hash_ignore = tuple(hash_ignore)

    def _call(self, function, tensor):
        return getattr(self.model, function)(tensor) if isinstance(function, str) else function(tensor)

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        codes = self._call(self.encode_function, pixel_values)
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point:
            raise ValueError(f"`encode` must return an integer tensor of codes, got {getattr(codes, 'dtype', type(codes))}.")
        expected = pixel_values.shape[0] * self.grid[0] * self.grid[1]
        if codes.numel() != expected:
            raise ValueError(
                f"`encode` returned {codes.numel()} codes for {pixel_values.shape[0]} images; the grid {self.grid} "
                f"needs {expected}. Check `grid` and `image_size`."
            )
        return codes

    def _decode(self, codes: torch.LongTensor) -> torch.Tensor:
        return self._call(self.decode_function, codes)

    def code_tensors(self) -> dict[str, torch.Tensor]:
        return {
            name: tensor.detach()
            for name, tensor in self.model.state_dict(keep_vars=True).items()
            if tensor.is_floating_point() and not any(ignored in name for ignored in self.hash_ignore)
        }

    def _code_config(self) -> dict:
        return {"class": f"{type(self.model).__module__}.{type(self.model).__qualname__}"}

    def _extra_record(self) -> dict:
        return {
            "encode": self.encode_function if isinstance(self.encode_function, str) else None,
            "decode": self.decode_function if isinstance(self.decode_function, str) else None,
            "hash_ignore": list(self.hash_ignore),
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """`model.safetensors` (the module's state dict) and `larp_tokenizer.json`."""
        save_directory = os.fspath(save_directory)
        os.makedirs(save_directory, exist_ok=True)
        save_model(self.model, os.path.join(save_directory, WEIGHTS_NAME))
        write_tokenizer_config(save_directory, self.tokenizer_record())

    @classmethod
    def from_record(cls, folder: str, record: dict, module: nn.Module | None, encode=None, decode=None):
        """Load the weights of a saved wrapped tokenizer into `module` (built by the caller, same architecture)."""
        if module is None:
            raise ValueError(
                f"{folder} holds the weights of a wrapped {record.get('class')} module, and a saved folder names no code "
                "to run. Build the module and pass it: "
                "load_tokenizer(folder, module=MyVQVAE(...)), with encode=/decode= if they were not method names."
            )
        encode = encode if encode is not None else record.get("encode")
        decode = decode if decode is not None else record.get("decode")
        if encode is None or decode is None:
            raise ValueError(
                f"{folder} was saved with encode/decode callables, not method names: pass them again, "
                "load_tokenizer(folder, module=..., encode=..., decode=...)."
            )
        load_model(module, os.path.join(folder, WEIGHTS_NAME))
        return cls(
            module,
            encode=encode,
            decode=decode,
            codebook_size=record["codebook_size"],
            grid=record["grid"],
            image_size=record["image_size"],
            num_channels=record["num_channels"],
            value_range=record["value_range"],
            hash_ignore=record.get("hash_ignore", ()),
        )


def wrap_tokenizer(
    module: nn.Module,
    *,
    encode: Callable | str,
    decode: Callable | str,
    codebook_size: int,
    grid,
    image_size,
    num_channels: int,
    value_range,
    hash_ignore: Sequence[str] = (),
) -> WrappedTokenizer:
    """
    Make an `ImageTokenizer` of your own VQ-VAE in a few lines.

    Args:
        module (`nn.Module`): the model (held in float32, evaluation mode).
        encode (callable or method name): `(B, C, H, W)` float32 pixels -> `B*h*w` integer codes in raster order.
        decode (callable or method name): `(B, h, w)` long codes -> `(B, C, H, W)` pixels.
        codebook_size (`int`), grid (`(h, w)` or int), image_size (`(H, W)` or int), num_channels (`int`):
            what the module reads and writes.
        value_range (`(low, high)`): the pixel range it was trained on, e.g. `(-1.0, 1.0)`.
        hash_ignore (names): parts of parameter/buffer names left out of `tokenizer_hash` (training-only state).

    Example:

    ```python
    >>> import torch
    >>> from larp_hf.tokenizers import wrap_tokenizer
    >>> class MyVQ(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.enc = torch.nn.Conv2d(3, 4, 4, stride=4)
    ...         self.codebook = torch.nn.Embedding(64, 4)
    ...         self.dec = torch.nn.ConvTranspose2d(4, 3, 4, stride=4)
    ...     def to_codes(self, x):  # (B, 3, 16, 16) -> (B, 4, 4)
    ...         z = self.enc(x).permute(0, 2, 3, 1)
    ...         return torch.cdist(z, self.codebook.weight[None]).argmin(-1)
    ...     def from_codes(self, codes):  # (B, 4, 4) -> (B, 3, 16, 16)
    ...         return self.dec(self.codebook(codes).permute(0, 3, 1, 2))
    >>> tokenizer = wrap_tokenizer(MyVQ(), encode="to_codes", decode="from_codes", codebook_size=64, grid=4,
    ...                            image_size=16, num_channels=3, value_range=(-1.0, 1.0))
    >>> codes = tokenizer.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    >>> codes.shape, tokenizer.decode(codes).shape
    (torch.Size([2, 4, 4]), torch.Size([2, 3, 16, 16]))
    ```
    """
    return WrappedTokenizer(
        module,
        encode=encode,
        decode=decode,
        codebook_size=codebook_size,
        grid=grid,
        image_size=image_size,
        num_channels=num_channels,
        value_range=value_range,
        hash_ignore=hash_ignore,
    )


__all__ = ["WEIGHTS_NAME", "WrappedTokenizer", "wrap_tokenizer"]
