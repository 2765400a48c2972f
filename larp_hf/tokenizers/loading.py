"""
`load_tokenizer(path)`: a folder (or Hub id) -> `ImageTokenizer`, recognised from what it holds; `as_tokenizer(model)`:
a library model object -> `ImageTokenizer`.

Recognised, in this order:
1. `larp_tokenizer.json` (written by the adapters' `save_pretrained`): its `adapter` names the adapter, and its value
   range, image size and options are used.
2. the library's own `config.json`: diffusers `VQModel` (`_class_name`), transformers `janus_vqgan` / `emu3_vqgan`
   (`model_type`) and larp_hf's `larp_vqvae`, each with its library's default value range.
Library models load with `trust_remote_code=False`: a folder never brings code to run.
"""

import json
import logging
import os

from torch import nn

from ..local_paths import check_local_path
from .base import TOKENIZER_CONFIG_NAME, ImageTokenizer


logger = logging.getLogger(__name__)

KNOWN_LAYOUTS = (
    "a folder saved by an ImageTokenizer's save_pretrained (with larp_tokenizer.json)",
    "diffusers VQModel.save_pretrained",
    "transformers JanusVQVAE.save_pretrained or Emu3VQVAE.save_pretrained",
    "larp_hf LarpVQVAEModel.save_pretrained",
)

# Multimodal models that hold a VQ tokenizer: their folder is not a tokenizer folder, but its VQ part is.
_COMPOSITE_MODEL_TYPES = {
    "janus": "JanusForConditionalGeneration.from_pretrained(path).model.vqmodel.save_pretrained(folder)",
    "emu3": "Emu3ForConditionalGeneration.from_pretrained(path).model.vqmodel.save_pretrained(folder)",
}

ENCODE_ONLY_ERROR = (
    "{what} has an encoder and a quantizer but no decoder: it can turn images into codes but cannot turn a prior's "
    "sampled codes back into images, which larp_hf needs. Use a tokenizer with a decoder (a diffusers VQModel, "
    "JanusVQVAE, Emu3VQVAE or your own VQ-VAE through wrap_tokenizer)."
)


def _read_json(path_or_repo_id: str, filename: str, subfolder: str | None) -> dict | None:
    """The JSON file `filename` of a local folder or Hub repository, or None when it has none."""
    local = os.path.join(path_or_repo_id, subfolder or "", filename)
    if os.path.isdir(path_or_repo_id):
        resolved = local if os.path.isfile(local) else None
    else:
        from transformers.utils import cached_file

        resolved = cached_file(
            path_or_repo_id, filename, subfolder=subfolder or "", _raise_exceptions_for_missing_entries=False
        )
    if resolved is None:
        return None
    with open(resolved, encoding="utf-8") as handle:
        return json.load(handle)


def _is_amused_vqvae(path_or_repo_id: str, subfolder: str | None) -> bool:
    """True for the `vqvae` part of an aMUSEd pipeline folder, recognised from the pipeline's model_index.json."""
    if subfolder:
        index = _read_json(path_or_repo_id, "model_index.json", None)
    else:
        parent = os.path.dirname(os.path.abspath(path_or_repo_id))
        index = _read_json(parent, "model_index.json", None) if os.path.isdir(path_or_repo_id) else None
    from .adapter_diffusers import AMUSED_PIPELINES

    return index is not None and index.get("_class_name") in AMUSED_PIPELINES


def _layout_of(record: dict | None, config: dict | None) -> str:
    if record is not None:
        return record["adapter"]
    if config is None:
        return "unknown"
    if config.get("_class_name") == "VQModel":
        return "diffusers.VQModel"
    return {
        "janus_vqgan": "transformers.JanusVQVAE",
        "emu3_vqgan": "transformers.Emu3VQVAE",
        "larp_vqvae": "larp_hf.LarpVQVAEModel",
    }.get(config.get("model_type"), "unknown")


def load_tokenizer(
    path_or_repo_id: str | os.PathLike,
    *,
    subfolder: str | None = None,
    value_range=None,
    image_size=None,
    module: nn.Module | None = None,
    encode=None,
    decode=None,
    **kwargs,
) -> ImageTokenizer:
    """
    Load the image tokenizer saved in a folder or Hub repository.

    Args:
        path_or_repo_id: a local folder or a Hub id.
        subfolder: the folder inside it (`"vqvae"` in an aMUSEd pipeline repository).
        value_range (`(low, high)`, *optional*): overrides the recorded or default pixel range.
        image_size (`int` or `(H, W)`, *optional*): overrides the recorded or default image size (VQModel, Emu3).
        module, encode, decode: for a folder saved from `wrap_tokenizer`: the module to load the weights into (and
            the functions, when callables rather than method names were wrapped).
        **kwargs: passed to the library's `from_pretrained` (`revision`, `cache_dir`, ...).

    Raises:
        FileNotFoundError: for a local path (`./x`, `/x`, `dir/x` where `dir` is a folder here) that does not exist.
        ValueError: for an encode-only tokenizer (Chameleon's), a multimodal model's folder, an unknown layout, or a
            `larp_tokenizer.json` whose recorded hash no longer matches the weights next to it.
    """
    path = os.fspath(path_or_repo_id)
    check_local_path(path, "path_or_repo_id")  # before the Hub is asked about a mistyped folder
    record = _read_json(path, TOKENIZER_CONFIG_NAME, subfolder)
    config = _read_json(path, "config.json", subfolder) if record is None else None
    layout = _layout_of(record, config)
    record = record or {}
    # The hash covers the value range and image size: compare it with the record's only when neither is overridden.
    check_recorded_hash = value_range is None and image_size is None and "revision" not in kwargs
    value_range = value_range if value_range is not None else record.get("value_range")
    image_size = image_size if image_size is not None else record.get("image_size")
    library_kwargs = {**kwargs, **({"subfolder": subfolder} if subfolder else {})}

    if layout == "diffusers.VQModel":
        try:
            from diffusers import VQModel
        except ImportError:
            raise ValueError(
                f"{path} holds a diffusers VQModel, and diffusers is not installed: pip install larp_hf[diffusers]."
            ) from None

        from .adapter_diffusers import AMUSED_VALUE_RANGE, DiffusersVQTokenizer

        if value_range is None and _is_amused_vqvae(path, subfolder):
            value_range = AMUSED_VALUE_RANGE
            logger.info("%s is the VQGAN of an aMUSEd pipeline: value range %s.", path, value_range)
        model = VQModel.from_pretrained(path, **library_kwargs)
        tokenizer = DiffusersVQTokenizer(model, value_range=value_range, image_size=image_size)
    elif layout == "transformers.JanusVQVAE":
        from transformers import JanusVQVAE

        from .adapter_transformers import JanusVQTokenizer

        model = JanusVQVAE.from_pretrained(path, trust_remote_code=False, **library_kwargs)
        options = {"codebook_l2_norm": record["codebook_l2_norm"]} if "codebook_l2_norm" in record else {}
        tokenizer = JanusVQTokenizer(model, value_range=value_range, **options)
    elif layout == "transformers.Emu3VQVAE":
        from transformers import Emu3VQVAE

        from .adapter_transformers import Emu3VQTokenizer

        model = Emu3VQVAE.from_pretrained(path, trust_remote_code=False, **library_kwargs)
        tokenizer = Emu3VQTokenizer(model, value_range=value_range, image_size=image_size)
    elif layout == "larp_hf.LarpVQVAEModel":
        from ..models.vqvae import LarpVQVAEModel

        if value_range is not None or image_size is not None:
            raise ValueError("A LarpVQVAEModel records its own image size and value range; do not pass them.")
        return LarpVQVAEModel.from_pretrained(path, trust_remote_code=False, **library_kwargs)
    elif layout == "wrapped":
        from .wrapped import WrappedTokenizer

        tokenizer = WrappedTokenizer.from_record(os.path.join(path, subfolder or ""), record, module, encode, decode)
    elif config is not None and config.get("model_type") == "chameleon_vqgan":
        raise ValueError(ENCODE_ONLY_ERROR.format(what=f"{path} (a ChameleonVQVAE)"))
    elif config is not None and config.get("model_type") in _COMPOSITE_MODEL_TYPES:
        raise ValueError(
            f"{path} holds a whole {config['model_type']} model, not its image tokenizer. Save the tokenizer part "
            f"once and load that folder: {_COMPOSITE_MODEL_TYPES[config['model_type']]}."
        )
    else:
        found = "no larp_tokenizer.json and no config.json" if config is None else (
            f"a config.json with _class_name={config.get('_class_name')!r}, model_type={config.get('model_type')!r}"
        )
        raise ValueError(
            f"{path} is not an image tokenizer folder larp_hf knows ({found}). Known layouts: "
            f"{'; '.join(KNOWN_LAYOUTS)}. Any other VQ-VAE can be wrapped with larp_hf.tokenizers.wrap_tokenizer."
        )

    recorded_hash = record.get("tokenizer_hash")
    if recorded_hash is not None and check_recorded_hash and recorded_hash != tokenizer.tokenizer_hash():
        raise ValueError(
            f"{path}: the weights next to larp_tokenizer.json are not the tokenizer it was written for (its recorded "
            "tokenizer_hash differs), so its value range and grid may not describe them. Save the tokenizer again "
            "with save_pretrained, or delete larp_tokenizer.json to load the library folder with its defaults."
        )
    return tokenizer


def as_tokenizer(model, **options) -> ImageTokenizer:
    """
    The `ImageTokenizer` of a model object: an adapter around a diffusers `VQModel`, a transformers `JanusVQVAE` or
    `Emu3VQVAE`; an object that already is one (a `LarpVQVAEModel`, an adapter) is returned as it is. `options` go to
    the adapter (`value_range`, `image_size`, ...).
    """
    class_name = type(model).__name__
    module_name = type(model).__module__
    if class_name == "ChameleonVQVAE" and module_name.startswith("transformers."):
        raise ValueError(ENCODE_ONLY_ERROR.format(what="ChameleonVQVAE"))
    if class_name == "VQModel" and module_name.startswith("diffusers."):
        from .adapter_diffusers import DiffusersVQTokenizer

        return DiffusersVQTokenizer(model, **options)
    if class_name == "JanusVQVAE" and module_name.startswith("transformers."):
        from .adapter_transformers import JanusVQTokenizer

        return JanusVQTokenizer(model, **options)
    if class_name == "Emu3VQVAE" and module_name.startswith("transformers."):
        from .adapter_transformers import Emu3VQTokenizer

        return Emu3VQTokenizer(model, **options)
    if isinstance(model, ImageTokenizer):
        if options:
            raise ValueError(f"{class_name} is already an image tokenizer; options {sorted(options)} do not apply.")
        return model
    raise ValueError(
        f"{class_name} is not an image tokenizer larp_hf knows (diffusers VQModel, transformers JanusVQVAE or "
        "Emu3VQVAE, or an object with the ImageTokenizer members). Wrap it with larp_hf.tokenizers.wrap_tokenizer("
        "model, encode=..., decode=..., codebook_size=..., grid=..., image_size=..., num_channels=..., value_range=...)."
    )


__all__ = ["ENCODE_ONLY_ERROR", "as_tokenizer", "load_tokenizer"]
