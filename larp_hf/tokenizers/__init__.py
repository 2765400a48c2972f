"""
Image tokenizers: the `ImageTokenizer` interface, adapters for other libraries' VQ models, and loading.

The adapters for diffusers and transformers models are imported when first used (`larp_hf.tokenizers.
DiffusersVQTokenizer` imports diffusers then), so `import larp_hf.tokenizers` never needs diffusers.
"""

import importlib

from .base import TOKENIZER_CONFIG_NAME, ImageTokenizer, TokenizerAdapter
from .checkpoints import ConvertedCheckpoint, convert_checkpoint
from .loading import as_tokenizer, load_tokenizer
from .wrapped import WrappedTokenizer, wrap_tokenizer


_LAZY = {
    "DiffusersVQTokenizer": ".adapter_diffusers",
    "JanusVQTokenizer": ".adapter_transformers",
    "Emu3VQTokenizer": ".adapter_transformers",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConvertedCheckpoint",
    "DiffusersVQTokenizer",
    "Emu3VQTokenizer",
    "ImageTokenizer",
    "JanusVQTokenizer",
    "TOKENIZER_CONFIG_NAME",
    "TokenizerAdapter",
    "WrappedTokenizer",
    "as_tokenizer",
    "convert_checkpoint",
    "load_tokenizer",
    "wrap_tokenizer",
]
