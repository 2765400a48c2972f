"""
convert_checkpoint against golden files made once with the reference code of taming-transformers and LlamaGen.

How the files in tests/tokenizers/golden/ were made (by a script kept outside this repository, since it imports the
two codebases; neither is a dependency of larp_hf):

- Reference code: CompVis/taming-transformers at commit 3ba01b241669f5ade541ce990f7650a3b8f65318 and
  FoundationVision/LlamaGen at commit ce98ec41803a74a90ce68c40ababa9eaeffeb4ec, imported from plain checkouts, with
  einops installed for taming's quantizer. taming's `taming.models.vqgan.VQModel` was used itself, with two stand-ins
  so that it imports without Lightning: `pytorch_lightning.LightningModule = torch.nn.Module` (the class only
  subclasses it) and `main.instantiate_from_config` returning a small module with `discriminator` and
  `perceptual_loss` convolutions in place of VQLPIPSWithDiscriminator (so that the checkpoint holds `loss.*` weights
  to be dropped).
- taming: `VQModel(ddconfig=dict(double_z=False, z_channels=8, resolution=16, in_channels=3, out_ch=3, ch=32,
  ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8], dropout=0.0), lossconfig={}, n_embed=32, embed_dim=4)`:
  two levels, attention at the 8×8 level only (so the reversed decoder order and both block types are exercised),
  `nin_shortcut`s where the width changes, z_channels != embed_dim. ch=32 is the least width taming's
  `Normalize` (GroupNorm with 32 groups) accepts.
- LlamaGen: `tokenizer.tokenizer_image.vq_model.VQModel(ModelArgs(codebook_size=32, codebook_embed_dim=4,
  encoder_ch_mult=[1, 2], decoder_ch_mult=[1, 2], z_channels=8))` (codebook_l2_norm=True, the default) with its
  encoder and decoder replaced by LlamaGen's own `Encoder(ch=32, ch_mult=[1, 2], num_res_blocks=1, z_channels=8)` and
  `Decoder(...)` of the same arguments (VQModel fixes ch=128 and two blocks per level).
- Weights: random, written as views into three small shared storages so the files stay small (torch.save writes a
  storage once): conv/linear weights from N(0, 0.05²), norm weights 1 + N(0, 0.1²), biases N(0, 0.02²) (seeds 10 and
  20); tensors larger than half the 4,096-float storage are windows of it with an overlapping row stride. The codebook
  is 32 latent vectors of 8 other random images (first codebook seed from 11 resp. 21 for which the nearest code
  beats the second by >= 1e-3 at every position of the fixed input, so float rounding cannot flip a code). LlamaGen's
  `quantize.codebook_used` is a zero buffer of 65,536 entries stored as one expanded float.
- Fixed input: `torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1`.
- Reference codes: taming `model.encode(x)[2][2]`, LlamaGen `model.encode(x)[2][2]`, both flat and reshaped to
  (2, 8, 8). Reference pixels: taming `model.decode(model.quantize.get_codebook_entry(codes, (2, 8, 8, 4)))` (its
  `decode_code` is broken, taming #42/#135), LlamaGen `model.decode_code(codes, shape=(2, 4, 8, 8))`. Stored with
  the input in `*_reference.safetensors`.
- Checkpoints, as each codebase writes them: taming a torch.save'd Lightning dict `{"epoch", "global_step",
  "pytorch-lightning_version", "state_dict", "optimizer_states", "lr_schedulers"}`; LlamaGen its training-script dict
  `{"model", "ema", "optimizer", "discriminator", "optimizer_disc", "steps", "args"}` with `args` an
  argparse.Namespace (image_size=16, codebook_l2_norm=True, ...), the reference weights as `ema` and other random
  weights (seed 30) as `model`, so a converter that took `model` would fail the pixel and code checks.
"""

import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file

from larp_hf.tokenizers import load_tokenizer
from larp_hf.tokenizers.checkpoints import convert_checkpoint


GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
TAMING = os.path.join(GOLDEN, "taming_vqgan.ckpt")
LLAMAGEN = os.path.join(GOLDEN, "llamagen_vq.pt")


def reference(name: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(GOLDEN, f"{name}_reference.safetensors"))


def assert_reproduces(folder: str, expected: dict[str, torch.Tensor]) -> None:
    tokenizer = load_tokenizer(folder)
    assert tokenizer.grid == (8, 8) and tokenizer.image_size == (16, 16) and tokenizer.codebook_size == 32
    assert tokenizer.value_range == (-1.0, 1.0)
    codes = tokenizer.encode(expected["pixel_values"])
    assert torch.equal(codes, expected["codes"])
    torch.testing.assert_close(tokenizer.decode(expected["codes"]), expected["pixels"], rtol=1e-5, atol=1e-5)


def test_taming_vqgan_becomes_a_vqmodel_folder_that_reproduces_taming(tmp_path):
    converted = convert_checkpoint(TAMING, tmp_path / "vqgan", image_size=16)
    assert (converted.layout, converted.model_class) == ("taming", "diffusers.VQModel")
    # Attention only at the 8×8 level: the encoder's second block, the decoder's first (it starts at the lowest).
    assert converted.config["down_block_types"] == ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]
    assert converted.config["up_block_types"] == ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"]
    assert (converted.config["latent_channels"], converted.config["vq_embed_dim"]) == (8, 4)
    assert "loss.*" in converted.dropped and "optimizer_states" in converted.dropped
    with open(tmp_path / "vqgan" / "config.json", encoding="utf-8") as handle:
        assert json.load(handle)["_class_name"] == "VQModel"  # a plain diffusers folder
    assert not any(name.endswith((".ckpt", ".pt", ".bin")) for name in os.listdir(tmp_path / "vqgan"))
    assert_reproduces(str(tmp_path / "vqgan"), reference("taming_vqgan"))


def test_llamagen_vq_becomes_a_janus_folder_that_reproduces_llamagen(tmp_path):
    converted = convert_checkpoint(LLAMAGEN, tmp_path / "vq", layout="llamagen")  # image size from its `args`
    assert (converted.layout, converted.model_class) == ("llamagen", "transformers.JanusVQVAE")
    assert converted.config["num_patches"] == 8 and converted.config["num_res_blocks"] == 1
    assert {"quantize.codebook_used", "model", "discriminator", "optimizer"} <= set(converted.dropped)
    with open(tmp_path / "vq" / "config.json", encoding="utf-8") as handle:
        assert json.load(handle)["model_type"] == "janus_vqgan"
    with open(tmp_path / "vq" / "larp_tokenizer.json", encoding="utf-8") as handle:
        assert json.load(handle)["codebook_l2_norm"] is True  # LlamaGen's quantizer compares unit vectors
    assert_reproduces(str(tmp_path / "vq"), reference("llamagen_vq"))


def test_conversion_says_what_it_dropped(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="larp_hf.tokenizers.checkpoints"):
        convert_checkpoint(TAMING, tmp_path / "vqgan", image_size=16)
    assert "loss.*" in caplog.text and "discriminator" in caplog.text


def test_image_size_defaults_to_256_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="larp_hf.tokenizers.checkpoints"):
        converted = convert_checkpoint(TAMING, tmp_path / "vqgan")
    assert converted.config["sample_size"] == 256 and "image_size" in caplog.text
    assert load_tokenizer(str(tmp_path / "vqgan")).grid == (128, 128)


def test_unknown_layout_names_wrap_tokenizer(tmp_path):
    torch.save({"state_dict": {"encoder.fc.weight": torch.randn(2, 2)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="wrap_tokenizer"):
        convert_checkpoint(tmp_path / "other.ckpt", tmp_path / "out")
    with pytest.raises(ValueError, match="wrap_tokenizer"):
        convert_checkpoint(TAMING, tmp_path / "out", layout="maskgit")
    with pytest.raises(ValueError, match="taming's key names, not llamagen's"):
        convert_checkpoint(TAMING, tmp_path / "out", layout="llamagen")
    assert not os.path.exists(tmp_path / "out")


def test_keys_that_do_not_map_are_named(tmp_path):
    checkpoint = torch.load(TAMING, weights_only=True)
    weights = checkpoint["state_dict"]
    weights["quantize.used"] = torch.arange(32)  # taming's `remap` buffer: VQModel has no index remapping
    del weights["decoder.conv_out.bias"]
    torch.save(checkpoint, tmp_path / "variant.ckpt")
    with pytest.raises(ValueError, match=r"quantize\.used.*decoder\.conv_out\.bias.*wrap_tokenizer"):
        convert_checkpoint(tmp_path / "variant.ckpt", tmp_path / "out", image_size=16)

    checkpoint = torch.load(LLAMAGEN, weights_only=False)  # our own golden file: its `args` Namespace is trusted
    weights = checkpoint["ema"]
    weights["decoder.conv_blocks.1.attn.0.norm.weight"] = torch.ones(32)  # attention where JanusVQVAE has none
    torch.save(checkpoint, tmp_path / "variant.pt")
    with pytest.raises(ValueError, match=r"decoder\.up\.1\.attn\.0\.norm\.weight"):
        convert_checkpoint(tmp_path / "variant.pt", tmp_path / "out")


def test_the_cli_converts_and_lists_what_it_dropped(tmp_path, capsys):
    from larp_hf import cli

    cli.main(["convert-tokenizer", LLAMAGEN, str(tmp_path / "janus"), "--image-size", "16"])
    printed = capsys.readouterr().out
    assert "llamagen checkpoint -> " in printed and "dropped discriminator" in printed
    assert_reproduces(str(tmp_path / "janus"), reference("llamagen_vq"))
    from safetensors.torch import save_file

    save_file({"backbone.weight": torch.zeros(2, 2)}, str(tmp_path / "unknown.safetensors"))
    with pytest.raises(SystemExit, match="wrap_tokenizer"):  # the library's refusal, as a CLI error
        cli.main(["convert-tokenizer", str(tmp_path / "unknown.safetensors"), str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()
