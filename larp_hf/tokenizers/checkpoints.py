"""
Reading taming-transformers VQGAN and LlamaGen VQ checkpoints without their code and without running any pickle.

`read_vq_checkpoint(path)` returns the tokenizer's own weights (encoder, quant_conv, quantize, post_quant_conv,
decoder) and names what it dropped: taming's `loss.*` (the PatchGAN discriminator and the LPIPS network its
Lightning module holds) and LlamaGen's `quantize.codebook_used` (a training-time usage log that must never enter a
hash), plus LlamaGen's optimizer/discriminator entries. The file is read with `torch.load(weights_only=True)` (or
safetensors), whose unpickler refuses every global but tensors and plain containers, so a planted payload never runs.
"""

import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file


# The weights every VQGAN of this family has, whatever it calls the rest.
_REQUIRED_KEYS = ("quantize.embedding.weight", "quant_conv.weight", "post_quant_conv.weight")
_TOKENIZER_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")
# Weights of the training losses and logs, never of the tokenizer.
_DROPPED_PREFIXES = {
    "loss.": "training loss modules (taming: PatchGAN discriminator `loss.discriminator.*`, LPIPS `loss.perceptual_loss.*`)",
}
_DROPPED_KEYS = {
    "quantize.codebook_used": "LlamaGen's codebook usage log (changes in training mode; never part of the tokenizer)",
}


@dataclass
class VQCheckpoint:
    """The tokenizer weights of a checkpoint, its layout (`"taming"` or `"llamagen"`) and what was left out."""

    state_dict: dict[str, torch.Tensor]
    layout: str
    dropped: dict[str, str] = field(default_factory=dict)  # key or prefix -> why, for the caller to report


def _load_payload(path: str):
    if path.endswith(".safetensors"):
        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the unpickler's refusal is reported with its own words
        raise ValueError(
            f"{path} could not be read as plain tensors with torch.load(weights_only=True): {error}. larp_hf never "
            "unpickles arbitrary objects. Save the model's state dict alone where you trust the file "
            "(torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pt'), or to .safetensors) "
            "and convert that."
        ) from None


def read_vq_checkpoint(path: str | os.PathLike) -> VQCheckpoint:
    """
    The tokenizer weights of a taming-transformers Lightning `.ckpt` (`checkpoint["state_dict"]`), a LlamaGen `.pt`
    (`checkpoint["model"]`), or a bare state dict of either (`.pt` or `.safetensors`).

    Raises:
        ValueError: the file holds Python objects other than tensors and containers, or is of a layout not recognised.
    """
    path = os.fspath(path)
    payload = _load_payload(path)
    dropped = {}
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        weights, source = payload["state_dict"], "taming"
        dropped.update({key: "Lightning training state" for key in payload if key != "state_dict"})
    elif isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        weights, source = payload["model"], "llamagen"
        dropped.update({key: "LlamaGen training state" for key in payload if key != "model"})
    else:
        weights, source = payload, None
    if not isinstance(weights, dict) or not all(isinstance(value, torch.Tensor) for value in weights.values()):
        raise ValueError(f"{path} holds no state dict of tensors (found {type(weights).__name__}).")
    missing = [key for key in _REQUIRED_KEYS if key not in weights]
    if missing:
        raise ValueError(
            f"{path} is not a taming-transformers VQGAN or LlamaGen VQ checkpoint: it lacks {missing} (found keys such "
            f"as {sorted(weights)[:5]}). Other VQ-VAEs can be used through larp_hf.tokenizers.wrap_tokenizer."
        )
    # LlamaGen's encoder names its stages conv_blocks; taming's calls them down.
    layout = "llamagen" if any(key.startswith("encoder.conv_blocks.") for key in weights) else "taming"
    if source is not None and source != layout:
        raise ValueError(f"{path} is wrapped like a {source} checkpoint but its weights are named like {layout}'s.")
    state_dict = {}
    for key, tensor in weights.items():
        prefix = next((p for p in _DROPPED_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            dropped[prefix + "*"] = _DROPPED_PREFIXES[prefix]
        elif key in _DROPPED_KEYS:
            dropped[key] = _DROPPED_KEYS[key]
        elif key.startswith(_TOKENIZER_PREFIXES):
            state_dict[key] = tensor
        else:
            dropped[key] = "not part of the tokenizer"
    return VQCheckpoint(state_dict=state_dict, layout=layout, dropped=dropped)


__all__ = ["VQCheckpoint", "read_vq_checkpoint"]
