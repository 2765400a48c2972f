"""read_vq_checkpoint: taming/LlamaGen layouts, what is dropped, and a planted pickle payload that must not run."""

import argparse

import pytest
import torch

from larp_hf.tokenizers.checkpoints import read_vq_checkpoint


def vq_weights(stage_name: str) -> dict[str, torch.Tensor]:
    """Key names as the two codebases write them (taming: encoder.down.*, LlamaGen: encoder.conv_blocks.*)."""
    return {
        f"encoder.{stage_name}.0.res.0.conv1.weight": torch.randn(4, 4, 3, 3),
        "quant_conv.weight": torch.randn(2, 4, 1, 1),
        "quantize.embedding.weight": torch.randn(8, 2),
        "post_quant_conv.weight": torch.randn(4, 2, 1, 1),
        "decoder.conv_out.weight": torch.randn(3, 4, 3, 3),
    }


def test_taming_lightning_checkpoint_drops_the_loss_weights(tmp_path):
    weights = vq_weights("down")
    checkpoint = {
        "state_dict": {**weights, "loss.discriminator.main.0.weight": torch.randn(2), "loss.perceptual_loss.net.w": torch.randn(2)},
        "epoch": 3,
        "global_step": 10,
        "optimizer_states": [{"state": {}}],
    }
    torch.save(checkpoint, tmp_path / "last.ckpt")
    read = read_vq_checkpoint(tmp_path / "last.ckpt")
    assert read.layout == "taming" and sorted(read.state_dict) == sorted(weights)
    assert "loss.*" in read.dropped and "discriminator" in read.dropped["loss.*"]
    assert {"epoch", "global_step", "optimizer_states"} <= set(read.dropped)


def test_llamagen_checkpoint_drops_codebook_used(tmp_path):
    weights = vq_weights("conv_blocks")
    torch.save({"model": {**weights, "quantize.codebook_used": torch.zeros(16)}, "steps": 5}, tmp_path / "vq.pt")
    read = read_vq_checkpoint(tmp_path / "vq.pt")
    assert read.layout == "llamagen" and sorted(read.state_dict) == sorted(weights)
    assert "quantize.codebook_used" in read.dropped and "steps" in read.dropped


def test_llamagen_training_checkpoint_reads_ema_weights_and_args(tmp_path):
    ema, raw = vq_weights("conv_blocks"), vq_weights("conv_blocks")
    args = argparse.Namespace(image_size=384, codebook_l2_norm=True, vq_model="VQ-16")
    torch.save({"model": raw, "ema": ema, "steps": 5, "args": args}, tmp_path / "0005000.pt")
    read = read_vq_checkpoint(tmp_path / "0005000.pt")
    assert all(torch.equal(read.state_dict[key], ema[key]) for key in ema)  # what LlamaGen's own scripts load
    assert "model" in read.dropped and read.hyper_parameters["image_size"] == 384


class _Payload:
    """Unpickling this calls `_mark` - a stand-in for os.system."""

    def __reduce__(self):
        return (_mark, ("ran",))


_MARKS = []


def _mark(value):
    _MARKS.append(value)
    return value


def test_planted_pickle_payload_never_runs(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": vq_weights("down"), "hyper_parameters": _Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_vq_checkpoint(path)
    assert _MARKS == []
    # The same file does run its payload under a plain unpickler: the test would see it.
    torch.load(path, weights_only=False)
    assert _MARKS == ["ran"]
    _MARKS.clear()


def test_payload_inside_a_llamagen_args_namespace_never_runs(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": vq_weights("conv_blocks"), "args": argparse.Namespace(image_size=_Payload())}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_vq_checkpoint(path)
    assert _MARKS == []


def test_unknown_layout_names_the_fix(tmp_path):
    torch.save({"model": {"fc.weight": torch.randn(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="lacks.*wrap_tokenizer"):
        read_vq_checkpoint(tmp_path / "other.pt")
