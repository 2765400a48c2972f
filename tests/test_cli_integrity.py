"""The commands that load a pipeline verify its folder (`--no-verify` opts out) and pair a prior without a tokenizer
hash only with `--allow-unpaired-tokenizer`, and say so in flags."""

import json

import pytest
from transformers import GPT2LMHeadModel

from larp_hf import LarpPipeline, prior_config
from larp_hf.demo.commands import main as demo_main

from .conftest import make_tiny_pipeline
from .pipelines.test_folder_integrity import flip_exponent_bits
from .test_cli import larp_hf


def test_a_damaged_pipeline_is_refused_until_no_verify(tmp_path, capsys):
    make_tiny_pipeline().save_pretrained(tmp_path / "pipe", sample_grid=False)
    flip_exponent_bits(tmp_path / "pipe" / "prior" / "model.safetensors", "transformer.wte.weight")
    for command in ("info", "generate"):
        _, err = larp_hf(command, tmp_path / "pipe", expect_success=False, capsys=capsys)
        assert "prior/model.safetensors: damaged" in err and "`--no-verify`" in err and "verify=False" not in err
        assert "Traceback" not in err
    out, _ = larp_hf("info", tmp_path / "pipe", "--json", "--no-verify", capsys=capsys)
    assert json.loads(out)["prior"]
    pytest.importorskip("gradio")
    with pytest.raises(SystemExit) as error:
        demo_main(["demo", str(tmp_path / "pipe"), "--device", "cpu"])  # refused before any page is served
    assert "prior/model.safetensors: damaged" in str(error.value) and "`--no-verify`" in str(error.value)


def test_a_prior_without_a_tokenizer_hash_needs_the_flag(tmp_path, capsys):
    pipeline = make_tiny_pipeline()
    pipeline.vqvae.save_pretrained(tmp_path / "vqvae")
    GPT2LMHeadModel(prior_config(pipeline.vqvae.config, preset="tiny", tokenizer_hash=None)).save_pretrained(
        tmp_path / "prior"
    )
    arguments = ("assemble", "--vqvae", tmp_path / "vqvae", "--prior", tmp_path / "prior", "--no-sample-grid")
    _, err = larp_hf(*arguments, "--output", tmp_path / "pipe", expect_success=False, capsys=capsys)
    assert "records no tokenizer hash" in err and "`--allow-unpaired-tokenizer`" in err
    assert not (tmp_path / "pipe").exists()
    larp_hf(*arguments, "--output", tmp_path / "pipe", "--allow-unpaired-tokenizer", capsys=capsys)
    _, err = larp_hf("info", tmp_path / "pipe", expect_success=False, capsys=capsys)
    assert "`--allow-unpaired-tokenizer`" in err
    out, _ = larp_hf("info", tmp_path / "pipe", "--allow-unpaired-tokenizer", capsys=capsys)
    assert "LarpPipeline" in out
    assert LarpPipeline.from_pretrained(tmp_path / "pipe", allow_unverified_pair=True).grid == (8, 8)
