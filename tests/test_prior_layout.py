"""The `larp` layout of a prior's config is checked against its vocabulary and positions wherever it is read, and a
prior that records no tokenizer hash is paired only when the caller says so."""

import copy
import json

import pytest
from transformers import AutoConfig, GPT2LMHeadModel

from larp_hf import LarpPipeline, LarpVQVAEConfig, check_pair, prior_config, prior_metadata
from larp_hf.data import LarpPriorCollator

from .conftest import make_tiny_pipeline


VQVAE = LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[16], codebook_size=32)  # 8×8 grid


def edited(config, **larp):
    config = copy.deepcopy(config)
    config.larp = {**config.larp, **larp}
    return config


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_a_sound_layout_passes(architecture):
    config = prior_config(VQVAE, preset="tiny", num_classes=3, tokenizer_hash=None, architecture=architecture)
    assert prior_metadata(config)["class_token_offset"] == 33
    roomy = prior_config(VQVAE, preset="tiny", tokenizer_hash=None, n_positions=100, vocab_size=64)
    assert prior_metadata(roomy)["bos_token_id"] == 32  # more positions and tokens than needed are fine


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"class_token_offset": 5}, r"`class_token_offset` = 5 lies inside the code range \[0, 32\)"),
        ({"null_class_token_id": 33}, r"`null_class_token_id` = 33 points at class 0, a real class"),
        ({"num_classes": 40}, r"`num_classes` = 40 from `class_token_offset` = 33 needs tokens up to 72, beyond the "
                              r"vocabulary \(vocab_size = 37\)"),
        ({"bos_token_id": 0}, r"`bos_token_id` = 0 lies inside the code range"),
        ({"bos_token_id": 34}, r"`bos_token_id` = 34 is the token of class 1"),
        ({"null_class_token_id": 99}, r"`null_class_token_id` = 99 lies beyond the vocabulary"),
        ({"grid": [9, 9]}, r"`grid` 9×9 plus the 2-token prefix needs 83 positions, more than the model's 66"),
        ({"num_classes": 0}, r"`num_classes` is 0 \(unconditional\) but `class_token_offset` = 33"),
        ({"num_classes": 2.5}, r"`num_classes` is 2.5, not an integer"),
    ],
)  # fmt: skip
def test_an_edited_layout_is_refused_naming_the_field(edit, message):
    config = prior_config(VQVAE, preset="tiny", num_classes=3, tokenizer_hash=None)
    with pytest.raises(ValueError, match=message):
        prior_metadata(edited(config, **edit))
    with pytest.raises(ValueError, match="restore the prior's config.json"):
        LarpPriorCollator.from_prior_config(edited(config, **edit))  # every reader of the layout checks it


def test_a_pipeline_folder_with_an_edited_layout_is_refused(tmp_path):
    make_tiny_pipeline(num_classes=2).save_pretrained(tmp_path / "pipe", sample_grid=False)
    config_path = tmp_path / "pipe" / "prior" / "config.json"
    config = json.loads(config_path.read_text())
    config["larp"]["null_class_token_id"] = config["larp"]["class_token_offset"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"prior/config\.json: damaged"):  # the manifest speaks first
        LarpPipeline.from_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match=r"pipe: .*`null_class_token_id` = 33 points at class 0"):
        LarpPipeline.from_pretrained(tmp_path / "pipe", verify=False)
    assert AutoConfig.from_pretrained(tmp_path / "pipe" / "prior").larp["null_class_token_id"] == 33


# ------------------------------------------------------------------------------------------ the tokenizer hash


def test_prior_config_takes_the_tokenizer_hash_and_a_config_must_say_which():
    pipeline = make_tiny_pipeline()
    assert prior_config(pipeline.vqvae, preset="tiny").larp["tokenizer_hash"] == pipeline.vqvae.tokenizer_hash()
    with pytest.raises(ValueError, match=r"LarpVQVAEConfig, which has no tokenizer_hash\(\).*Pass `tokenizer_hash`"):
        prior_config(pipeline.vqvae.config, preset="tiny")
    assert prior_config(pipeline.vqvae.config, preset="tiny", tokenizer_hash=None).larp["tokenizer_hash"] is None
    with pytest.raises(ValueError, match="`tokenizer_hash` must be a string"):
        prior_config(pipeline.vqvae, preset="tiny", tokenizer_hash=123)


def test_a_prior_without_a_tokenizer_hash_is_paired_only_when_allowed(tmp_path):
    pipeline = make_tiny_pipeline()
    hashless = GPT2LMHeadModel(prior_config(pipeline.vqvae.config, preset="tiny", tokenizer_hash=None))
    with pytest.raises(ValueError, match=r"records no tokenizer hash.*`allow_unverified_pair=True`"):
        check_pair(pipeline.vqvae, hashless)
    with pytest.raises(ValueError, match="records no tokenizer hash"):
        LarpPipeline(pipeline.vqvae, hashless)
    check_pair(pipeline.vqvae, hashless, allow_unverified_pair=True)
    unverified = LarpPipeline(pipeline.vqvae, hashless, allow_unverified_pair=True)
    assert unverified(num_images=2, seed=0).codes.shape == (2, 8, 8)

    unverified.save_pretrained(tmp_path / "pipe", sample_grid=False)
    with pytest.raises(ValueError, match="records no tokenizer hash"):
        LarpPipeline.from_pretrained(tmp_path / "pipe")
    assert LarpPipeline.from_pretrained(tmp_path / "pipe", allow_unverified_pair=True).grid == (8, 8)
