"""
Reading taming-transformers VQGAN and LlamaGen VQ checkpoints without their code and without running any pickle, and
converting them into library folders: taming -> diffusers `VQModel`, LlamaGen -> transformers `JanusVQVAE`
(`convert_checkpoint`).

`read_vq_checkpoint(path)` returns the tokenizer's own weights (encoder, quant_conv, quantize, post_quant_conv,
decoder) and names what it dropped: taming's `loss.*` (the PatchGAN discriminator and the LPIPS network its
Lightning module holds) and LlamaGen's `quantize.codebook_used` (a training-time usage log that must never enter a
hash), plus LlamaGen's optimizer/discriminator entries and, when it has EMA weights, its raw ones. The file is read
with `torch.load(weights_only=True)` (or safetensors), whose unpickler refuses every global but tensors and plain
containers, so a planted payload never runs.
"""

import argparse
import logging
import os
import re
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file


logger = logging.getLogger(__name__)

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
    """
    The tokenizer weights of a checkpoint, its layout (`"taming"` or `"llamagen"`), what was left out (key or prefix
    -> why) and the training hyper-parameters stored with it as plain data (Lightning's `hyper_parameters`, LlamaGen's
    `args`), from which the conversion reads what the weights cannot tell (the image size).
    """

    state_dict: dict[str, torch.Tensor]
    layout: str
    dropped: dict[str, str] = field(default_factory=dict)
    hyper_parameters: dict = field(default_factory=dict)


def _load_payload(path: str):
    if path.endswith(".safetensors"):
        return load_file(path)
    try:
        # LlamaGen's training script stores its argparse.Namespace as "args": a plain attribute holder, allowed so
        # that its checkpoints load; every other global is still refused.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the unpickler's refusal is reported with its own words
        raise ValueError(
            f"{path} could not be read as plain tensors with torch.load(weights_only=True): {error}. larp_hf never "
            "unpickles arbitrary objects. Save the model's state dict alone where you trust the file "
            "(torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pt'), or to .safetensors) "
            "and convert that."
        ) from None


def _plain(value):
    """`value` as JSON-like data (dicts, lists, str, numbers, bools, None), or None when it holds anything else."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        items = {str(key): _plain(item) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not None}
    if isinstance(value, (list, tuple)):
        items = [_plain(item) for item in value]
        return items if all(item is not None for item in items) else None
    return value if isinstance(value, (str, int, float, bool)) else None


def read_vq_checkpoint(path: str | os.PathLike) -> VQCheckpoint:
    """
    The tokenizer weights of a taming-transformers Lightning `.ckpt` (`checkpoint["state_dict"]`), a LlamaGen `.pt`
    (`checkpoint["ema"]` when it has one, as LlamaGen's own sampling and evaluation scripts pick, else
    `checkpoint["model"]`), or a bare state dict of either (`.pt` or `.safetensors`).

    Raises:
        ValueError: the file holds Python objects other than tensors and containers, or is of a layout not recognised.
    """
    path = os.fspath(path)
    payload = _load_payload(path)
    dropped, hyper_parameters = {}, {}
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        weights, source = payload["state_dict"], "taming"
        hyper_parameters = _plain(payload.get("hyper_parameters")) or {}
        dropped.update({key: "Lightning training state" for key in payload if key != "state_dict"})
    elif isinstance(payload, dict) and isinstance(payload.get("ema", payload.get("model")), dict):
        entry = "ema" if isinstance(payload.get("ema"), dict) else "model"
        weights, source = payload[entry], "llamagen"
        hyper_parameters = _plain(payload.get("args")) or {}
        dropped.update({key: "LlamaGen training state" for key in payload if key != entry})
        if entry == "ema":
            dropped["model"] = "LlamaGen's raw (non-EMA) weights: its sampling and evaluation scripts use `ema`"
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
    return VQCheckpoint(state_dict=state_dict, layout=layout, dropped=dropped, hyper_parameters=hyper_parameters)


# ----------------------------------------------------------------------------------------------------- conversion
#
# Both codebases descend from the same VQGAN (taming's `diffusionmodules/model.py`); what differs is the names.
# taming -> diffusers `VQModel`: the levels become `down_blocks`/`up_blocks`, blocks `resnets`, the 1×1 q/k/v/proj_out
# convolutions of an attention block `Attention`'s to_q/to_k/to_v/to_out.0 linear layers, and the decoder's levels run
# the other way: taming's `decoder.up[i]` is the level at resolution i (`up.insert(0, ...)`), diffusers'
# `up_blocks[0]` the first one run, at the lowest resolution.
# LlamaGen -> transformers `JanusVQVAE`: `conv_blocks.i.res.j` become `down.i.block.j` / `up.i.block.j` (both
# decoders list their levels lowest resolution first), and the mid ModuleList [res, attn, res] becomes
# block_1/attn_1/block_2.

# taming's and LlamaGen's `Normalize` is `GroupNorm(num_groups=32, eps=1e-6)`; VQModel's norm_num_groups must match.
TAMING_NORM_NUM_GROUPS = 32
# Both scale images to [-1, 1] for training (taming `data/base.py`: image/127.5 - 1; LlamaGen: Normalize(0.5, 0.5)).
VQGAN_VALUE_RANGE = (-1.0, 1.0)
# Neither checkpoint records the image size its model was trained at, unless its hyper-parameters hold it; the
# published taming VQGANs and LlamaGen tokenizers were trained at 256.
DEFAULT_IMAGE_SIZE = 256

_TAMING_BLOCK = {"nin_shortcut": "conv_shortcut"}
_TAMING_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_MID = {"block_1": "resnets.0", "attn_1": "attentions.0", "block_2": "resnets.1"}
_LLAMAGEN_MID = {"0": "block_1", "1": "attn_1", "2": "block_2"}


@dataclass
class ConvertedCheckpoint:
    """What `convert_checkpoint` wrote: folder, source layout, library class, its config, and what was dropped."""

    folder: str
    layout: str
    model_class: str
    config: dict
    dropped: dict[str, str]


def _levels(state_dict: dict, prefix: str) -> list[int]:
    """The level indices `i` of keys `{prefix}{i}.…`, sorted (checked to run 0..n-1)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    levels = sorted({int(match.group(1)) for key in state_dict if (match := pattern.match(key))})
    if levels != list(range(len(levels))) or not levels:
        raise ValueError(f"The checkpoint's `{prefix}N` levels are {levels}, not 0..n-1.")
    return levels


def _count(state_dict: dict, prefix: str) -> int:
    """How many sub-modules `{prefix}{j}.…` exist."""
    return len({match.group(1) for key in state_dict if (match := re.match(re.escape(prefix) + r"(\d+)\.", key))})


def _taming_key(key: str, num_levels: int) -> str | None:
    """A taming VQGAN key -> the diffusers `VQModel` key, or None when it has no counterpart."""
    if key.startswith(("quant_conv.", "post_quant_conv.")) or key == "quantize.embedding.weight":
        return key
    match = re.fullmatch(r"(encoder|decoder)\.(.+)", key)
    if match is None:
        return None
    part, rest = match.groups()
    if re.fullmatch(r"(conv_in|conv_out)\.\w+", rest):
        return key
    if (m := re.fullmatch(r"norm_out\.(\w+)", rest)) is not None:
        return f"{part}.conv_norm_out.{m.group(1)}"
    if (m := re.fullmatch(r"mid\.(block_1|block_2)\.(\w+)\.(\w+)", rest)) is not None:
        layer = _TAMING_BLOCK.get(m.group(2), m.group(2))
        return f"{part}.mid_block.{_MID[m.group(1)]}.{layer}.{m.group(3)}"
    if (m := re.fullmatch(r"mid\.attn_1\.(\w+)\.(\w+)", rest)) is not None and m.group(1) in _TAMING_ATTN:
        return f"{part}.mid_block.attentions.0.{_TAMING_ATTN[m.group(1)]}.{m.group(2)}"
    stage, blocks = ("down", "down_blocks") if part == "encoder" else ("up", "up_blocks")
    m = re.fullmatch(stage + r"\.(\d+)\.(.+)", rest)
    if m is None:
        return None
    level = int(m.group(1)) if part == "encoder" else num_levels - 1 - int(m.group(1))
    inner = m.group(2)
    if (b := re.fullmatch(r"block\.(\d+)\.(norm1|conv1|norm2|conv2|nin_shortcut)\.(\w+)", inner)) is not None:
        layer = _TAMING_BLOCK.get(b.group(2), b.group(2))
        return f"{part}.{blocks}.{level}.resnets.{b.group(1)}.{layer}.{b.group(3)}"
    if (b := re.fullmatch(r"attn\.(\d+)\.(\w+)\.(\w+)", inner)) is not None and b.group(2) in _TAMING_ATTN:
        return f"{part}.{blocks}.{level}.attentions.{b.group(1)}.{_TAMING_ATTN[b.group(2)]}.{b.group(3)}"
    if (b := re.fullmatch(r"(downsample|upsample)\.conv\.(\w+)", inner)) is not None:
        return f"{part}.{blocks}.{level}.{b.group(1)}rs.0.conv.{b.group(2)}"
    return None


def _llamagen_key(key: str) -> str | None:
    """A LlamaGen VQ key -> the transformers `JanusVQVAE` key, or None when it has no counterpart."""
    if key.startswith(("quant_conv.", "post_quant_conv.")) or key == "quantize.embedding.weight":
        return key
    match = re.fullmatch(r"(encoder|decoder)\.(.+)", key)
    if match is None:
        return None
    part, rest = match.groups()
    if re.fullmatch(r"(conv_in|conv_out|norm_out)\.\w+", rest):
        return key
    if (m := re.fullmatch(r"mid\.([012])\.(.+)", rest)) is not None:
        return f"{part}.mid.{_LLAMAGEN_MID[m.group(1)]}.{m.group(2)}"
    stage = "down" if part == "encoder" else "up"
    if (m := re.fullmatch(r"conv_blocks\.(\d+)\.res\.(\d+)\.(.+)", rest)) is not None:
        return f"{part}.{stage}.{m.group(1)}.block.{m.group(2)}.{m.group(3)}"
    if (m := re.fullmatch(r"conv_blocks\.(\d+)\.(attn\.\d+\..+|downsample\.conv\.\w+|upsample\.conv\.\w+)", rest)):
        return f"{part}.{stage}.{m.group(1)}.{m.group(2)}"
    return None


def _map_state_dict(state_dict: dict, rename, expected: dict[str, torch.Tensor], what: str) -> dict:
    """
    Rename every key with `rename`, reshape 1×1 convolutions where the target is a linear layer, cast to float32, and
    refuse anything that does not fill `expected` (the target model's state dict) exactly.
    """
    mapped, unmapped = {}, []
    for key, tensor in state_dict.items():
        target = rename(key)
        if target is None:
            unmapped.append(key)
            continue
        tensor = tensor.detach().to(torch.float32)
        if target in expected and tensor.ndim == 4 and expected[target].ndim == 2:
            tensor = tensor[:, :, 0, 0]  # a 1×1 convolution's weight is a linear layer's
        mapped[target] = tensor.contiguous()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    wrong = sorted(
        f"{key}: {tuple(mapped[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(mapped) & set(expected)
        if mapped[key].shape != expected[key].shape
    )
    if unmapped or missing or unexpected or wrong:
        problems = "; ".join(
            f"{label}: {items[:8]}" + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            for label, items in (
                ("keys with no counterpart", unmapped),
                (f"{what} weights the checkpoint lacks", missing),
                (f"mapped keys {what} does not have", unexpected),
                ("shape mismatches", wrong),
            )
            if items
        )
        raise ValueError(
            f"This checkpoint does not map onto {what}: {problems}. It is a variant of the layout this converter does "
            "not know; use it through larp_hf.tokenizers.wrap_tokenizer with its own code instead."
        )
    return mapped


def _image_size(image_size, hyper_parameters: dict, factor: int, layout: str):
    """The image size: given, else from the stored hyper-parameters, else DEFAULT_IMAGE_SIZE (with a warning)."""
    if image_size is None:
        ddconfig = hyper_parameters.get("ddconfig")  # taming's Lightning hyper-parameters, where saved
        stored = hyper_parameters.get("image_size", ddconfig.get("resolution") if isinstance(ddconfig, dict) else None)
        if isinstance(stored, int):
            image_size = stored
            logger.info("Image size %d read from the %s checkpoint's hyper-parameters.", image_size, layout)
        else:
            image_size = DEFAULT_IMAGE_SIZE
            logger.warning(
                "The %s checkpoint does not record its image size: using %d (grid %d×%d). Pass image_size=... if it "
                "was trained at another size.", layout, image_size, image_size // factor, image_size // factor,
            )  # fmt: skip
    return image_size


def _taming_to_diffusers(checkpoint: VQCheckpoint, image_size, value_range):
    """A taming VQGAN state dict -> a `DiffusersVQTokenizer` around an equivalent diffusers `VQModel`."""
    from diffusers import VQModel

    from .adapter_diffusers import DiffusersVQTokenizer

    state_dict = checkpoint.state_dict
    levels = _levels(state_dict, "encoder.down.")
    if _levels(state_dict, "decoder.up.") != levels:
        raise ValueError("The taming checkpoint's encoder and decoder have different numbers of levels.")
    layers_per_block = _count(state_dict, "encoder.down.0.block.")
    for level in levels:
        if _count(state_dict, f"encoder.down.{level}.block.") != layers_per_block or (
            _count(state_dict, f"decoder.up.{level}.block.") != layers_per_block + 1
        ):
            raise ValueError(
                "The taming checkpoint's levels hold different numbers of blocks; VQModel has one layers_per_block "
                "(the encoder's per level, the decoder's one more)."
            )
    block_out_channels = [state_dict[f"encoder.down.{level}.block.0.conv1.weight"].shape[0] for level in levels]
    config = {
        "in_channels": state_dict["encoder.conv_in.weight"].shape[1],
        "out_channels": state_dict["decoder.conv_out.weight"].shape[0],
        "block_out_channels": block_out_channels,
        "down_block_types": [
            "AttnDownEncoderBlock2D" if _count(state_dict, f"encoder.down.{level}.attn.") else "DownEncoderBlock2D"
            for level in levels
        ],
        # up_blocks[k] is taming's decoder.up[n-1-k]: the decoder runs from the lowest resolution up.
        "up_block_types": [
            "AttnUpDecoderBlock2D" if _count(state_dict, f"decoder.up.{level}.attn.") else "UpDecoderBlock2D"
            for level in reversed(levels)
        ],
        "layers_per_block": layers_per_block,
        "act_fn": "silu",
        "latent_channels": state_dict["encoder.conv_out.weight"].shape[0],  # taming's z_channels (double_z=False)
        "num_vq_embeddings": state_dict["quantize.embedding.weight"].shape[0],
        "vq_embed_dim": state_dict["quantize.embedding.weight"].shape[1],
        "norm_num_groups": TAMING_NORM_NUM_GROUPS,
        "mid_block_add_attention": True,
    }
    config["sample_size"] = _image_size(image_size, checkpoint.hyper_parameters, 2 ** (len(levels) - 1), "taming")
    model = VQModel(**config)
    mapped = _map_state_dict(
        state_dict, lambda key: _taming_key(key, len(levels)), model.state_dict(), "diffusers VQModel"
    )
    model.load_state_dict(mapped, strict=True)
    return DiffusersVQTokenizer(model, value_range=value_range), config


def _llamagen_to_janus(checkpoint: VQCheckpoint, image_size, value_range):
    """A LlamaGen VQ state dict -> a `JanusVQTokenizer` around an equivalent transformers `JanusVQVAE`."""
    from transformers import JanusVQVAE, JanusVQVAEConfig

    from .adapter_transformers import JanusVQTokenizer

    state_dict, hyper_parameters = checkpoint.state_dict, checkpoint.hyper_parameters
    if hyper_parameters.get("codebook_l2_norm", True) is not True:
        raise ValueError(
            "This LlamaGen tokenizer was trained with codebook_l2_norm=False; JanusVQVAE always L2-normalises the "
            "codes it decodes, so it cannot hold this model. Use it through larp_hf.tokenizers.wrap_tokenizer."
        )
    levels = _levels(state_dict, "encoder.conv_blocks.")
    base_channels = state_dict["encoder.conv_in.weight"].shape[0]
    channels = [state_dict[f"encoder.conv_blocks.{level}.res.0.conv1.weight"].shape[0] for level in levels]
    if any(value % base_channels for value in channels):
        raise ValueError(f"LlamaGen encoder widths {channels} are not multiples of its conv_in width {base_channels}.")
    factor = 2 ** (len(levels) - 1)
    image_size = _image_size(image_size, hyper_parameters, factor, "LlamaGen")
    if not isinstance(image_size, int) or image_size % factor:
        raise ValueError(f"JanusVQVAE reads square images, a multiple of {factor} pixels wide; got {image_size!r}.")
    config = {
        "in_channels": state_dict["encoder.conv_in.weight"].shape[1],
        "out_channels": state_dict["decoder.conv_out.weight"].shape[0],
        "base_channels": base_channels,
        "channel_multiplier": [value // base_channels for value in channels],
        "num_res_blocks": _count(state_dict, "encoder.conv_blocks.0.res."),
        "latent_channels": state_dict["encoder.conv_out.weight"].shape[0],  # z_channels
        "embed_dim": state_dict["quantize.embedding.weight"].shape[1],
        "num_embeddings": state_dict["quantize.embedding.weight"].shape[0],
        "double_latent": False,
        "num_patches": image_size // factor,  # the grid JanusVQVAE.decode accepts
    }
    model = JanusVQVAE(JanusVQVAEConfig(**config))
    # A decoder of other widths than the encoder's (LlamaGen allows decoder_ch_mult != encoder_ch_mult) shows up here
    # as shape mismatches: JanusVQVAE has one channel_multiplier.
    mapped = _map_state_dict(state_dict, _llamagen_key, model.state_dict(), "transformers JanusVQVAE")
    model.load_state_dict(mapped, strict=True)
    return JanusVQTokenizer(model, value_range=value_range, codebook_l2_norm=True), config


_CONVERTERS = {
    "taming": (_taming_to_diffusers, "diffusers.VQModel"),
    "llamagen": (_llamagen_to_janus, "transformers.JanusVQVAE"),
}


def convert_checkpoint(
    path: str | os.PathLike,
    output_folder: str | os.PathLike,
    layout: str | None = None,
    *,
    image_size: int | None = None,
    value_range=None,
) -> ConvertedCheckpoint:
    """
    Convert a taming-transformers VQGAN checkpoint into a diffusers `VQModel` folder, or a LlamaGen VQ checkpoint into
    a transformers `JanusVQVAE` folder, that `larp_hf.tokenizers.load_tokenizer(output_folder)` loads with no
    taming, Lightning or LlamaGen installed.

    The file is read with `read_vq_checkpoint` (no pickle runs); the discriminator, LPIPS, optimizer and usage-log
    entries are dropped, and the list is logged and returned. The library config is derived from the weights' shapes
    (levels, widths, blocks per level, where attention sits, latent and codebook sizes) and from the stored
    hyper-parameters where the checkpoint has them as plain data (the image size).

    Args:
        path: the `.ckpt` / `.pt` / `.safetensors` file.
        output_folder: where to write the library folder plus `larp_tokenizer.json`.
        layout (`str`, *optional*): `"taming"` or `"llamagen"`; recognised from the key names when omitted.
        image_size (`int`, *optional*): the image size the model was trained at; read from the hyper-parameters
            when stored, else 256 with a warning. For LlamaGen it fixes the code grid (`JanusVQVAE.num_patches`).
        value_range (`(low, high)`, *optional*, defaults to `(-1.0, 1.0)`): the pixel range, as both codebases train.

    Returns:
        `ConvertedCheckpoint` with the folder, the layout, the library class, its config and what was dropped.

    Raises:
        ValueError: a layout other than these two (use `wrap_tokenizer`), keys that do not map (named), a pickle.
    """
    if layout is not None and layout not in _CONVERTERS:
        raise ValueError(
            f"layout must be one of {sorted(_CONVERTERS)} or None (recognised from the keys), got {layout!r}. Any "
            "other VQ-VAE can be used through larp_hf.tokenizers.wrap_tokenizer."
        )
    checkpoint = read_vq_checkpoint(path)
    if layout is not None and layout != checkpoint.layout:
        raise ValueError(f"{os.fspath(path)} has {checkpoint.layout}'s key names, not {layout}'s.")
    convert, model_class = _CONVERTERS[checkpoint.layout]
    tokenizer, config = convert(checkpoint, image_size, VQGAN_VALUE_RANGE if value_range is None else value_range)
    output_folder = os.fspath(output_folder)
    tokenizer.save_pretrained(output_folder)
    if checkpoint.dropped:
        logger.warning(
            "Converted %s (%s) into a %s folder at %s, dropping what is not part of the tokenizer: %s",
            os.fspath(path), checkpoint.layout, model_class, output_folder,
            "; ".join(f"{key} ({why})" for key, why in sorted(checkpoint.dropped.items())),
        )  # fmt: skip
    return ConvertedCheckpoint(
        folder=output_folder, layout=checkpoint.layout, model_class=model_class, config=config,
        dropped=dict(checkpoint.dropped),
    )  # fmt: skip


__all__ = [
    "ConvertedCheckpoint",
    "DEFAULT_IMAGE_SIZE",
    "TAMING_NORM_NUM_GROUPS",
    "VQCheckpoint",
    "VQGAN_VALUE_RANGE",
    "convert_checkpoint",
    "read_vq_checkpoint",
]
