"""A --config file that cannot be read is named with its line; integer model fields are integers, in `model:` of a
--config file and in --model.FIELD alike (no 2.7, no yes)."""

import pytest
import yaml

from .test_run_arguments import parse, refusal


@pytest.fixture(autouse=True)
def _in_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("recipe", "field", "value", "message"),
    [
        ("train_vqvae", "image_size", 32.0, "must be an integer"),
        ("train_vqvae", "codebook_size", True, "must be an integer"),
        ("train_vqvae", "hidden_channels", [16, 2.5], "must be a list of integers"),
        ("train_prior", "n_layer", 2.7, "must be an integer"),
        ("train_classifier", "feature_dim", False, "must be an integer"),
    ],
)
def test_non_integers_for_integer_model_fields_are_refused_before_any_work(recipe, field, value, message, tmp_path,
                                                                          capsys):  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {field: value}}))
    assert message in refusal(recipe, capsys, "--config", config)
    assert message in refusal(recipe, capsys, f"--model.{field}", yaml.safe_dump(value).strip().removesuffix("..."))


def test_integer_and_float_model_fields_still_take_their_values(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"image_size": 32, "hidden_channels": [16, 32], "ema_decay": 1}}))
    assert parse("train_vqvae", "--config", config).model == {"image_size": 32, "hidden_channels": [16, 32],
                                                              "ema_decay": 1}  # fmt: skip
    assert parse("train_prior", "--model.n_inner", "null").model == {"n_inner": None}


def test_a_config_file_that_cannot_be_read_is_named_with_the_line_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: 3\n  seed: [1\n")
    assert f"--config {bad}: {bad}, line 2, column 7: invalid YAML" in refusal("train_vqvae", capsys, "--config", bad)
    missing = tmp_path / "missing.yaml"
    assert f"--config {missing}: no such file or folder: {missing}" in refusal("train_prior", capsys, "--config",
                                                                                 missing)  # fmt: skip
    assert "is a folder, but a file is expected" in refusal("train_classifier", capsys, "--config", tmp_path)
    listed = tmp_path / "list.yaml"
    listed.write_text("- max_steps\n")
    assert "must hold a mapping of flag names to values, not a list" in refusal("train_vqvae", capsys, "--config",
                                                                                listed)  # fmt: skip
