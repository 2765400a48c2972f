"""
No recipe destroys its own inputs: an output folder that is, contains or lies inside a folder or file the run reads
(the tokenizer, the token dataset, the images, the config file, another run's checkpoint) is refused by name before
any work, and nothing in the input changes. The checks run in this process, as each recipe's `parse_args` and
`training.start_run` make them; one launch shows the refusal as a user meets it.
"""

import argparse
import hashlib
import os
import subprocess
import sys

import pytest

from larp_hf import training

from .test_train_vqvae import ROOT, import_recipe


@pytest.fixture(autouse=True)
def _in_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipes' relative default output_dir must not meet a run of the user's


def folder_with_files(path, *names):
    path.mkdir(parents=True)
    for name in names:
        (path / name).write_text(name)
    return path


def snapshot(folder) -> dict[str, str]:
    files = (path for path in sorted(folder.rglob("*")) if path.is_file())
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def refused(recipe: str, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        import_recipe(recipe).parse_args([str(arg) for arg in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# ---- the rule, as a library function --------------------------------------------------------------------------


def test_output_overlap_names_the_input_and_how_it_meets_the_output(tmp_path):
    tokenizer = folder_with_files(tmp_path / "tokenizer", "config.json")
    assert "--output_dir " + str(tokenizer) + " is --vqvae" in training.output_overlap(tokenizer, {"--vqvae": tokenizer})
    assert " contains --vqvae " in training.output_overlap(tmp_path, {"--vqvae": tokenizer})
    assert " lies inside --vqvae " in training.output_overlap(tokenizer / "prior", {"--vqvae": tokenizer})
    assert " lies inside --vqvae " in training.output_overlap(tokenizer / "a" / "b", {"--vqvae": str(tokenizer)})
    # The name is the caller's: a library caller names its argument.
    assert training.output_overlap(tokenizer, {"vqvae": tokenizer}, output_name="output").startswith("output ")


def test_output_overlap_leaves_apart_hub_ids_and_missing_paths_alone(tmp_path):
    tokenizer = folder_with_files(tmp_path / "tokenizer", "config.json")
    assert training.output_overlap(tmp_path / "prior", {"--vqvae": tokenizer}) is None
    assert training.output_overlap(tmp_path / "token", {"--vqvae": tokenizer}) is None  # a shared prefix is not a parent
    assert training.output_overlap(tmp_path, {"--vqvae": "someone/tokenizer", "--dataset": None}) is None
    assert training.output_overlap(tmp_path, {"--dataset": tmp_path / "not-there"}) is None


def test_links_are_followed_to_the_input_they_name(tmp_path):
    tokenizer = folder_with_files(tmp_path / "tokenizer", "config.json")
    os.symlink(tokenizer, tmp_path / "link")
    assert " is --vqvae " in training.output_overlap(tmp_path / "link", {"--vqvae": tokenizer})
    assert " is --vqvae " in training.output_overlap(tokenizer, {"--vqvae": tmp_path / "link"})
    assert " lies inside --vqvae " in training.output_overlap(tmp_path / "link" / "prior", {"--vqvae": tokenizer})


def test_a_file_input_counts_too(tmp_path):
    data = tmp_path / "tokens" / "train.parquet"
    data.parent.mkdir()
    data.write_bytes(b"PAR1")
    assert " contains --token_dataset " in training.output_overlap(tmp_path / "tokens", {"--token_dataset": data})
    assert " is --token_dataset " in training.output_overlap(data, {"--token_dataset": data})


# ---- every recipe, at parse time ----------------------------------------------------------------------------


def test_the_prior_recipe_refuses_an_output_among_its_inputs(tmp_path, capsys):
    tokenizer = folder_with_files(tmp_path / "vqvae", "config.json", "model.safetensors")
    tokens = folder_with_files(tmp_path / "tokens", "dataset_dict.json")
    images = folder_with_files(tmp_path / "images", "a.png")
    before = snapshot(tmp_path)
    cases = [
        (["--vqvae", tokenizer, "--output_dir", tokenizer, "--overwrite_output_dir"], "is --vqvae"),
        (["--vqvae", tokenizer, "--output_dir", tokenizer / "prior"], "lies inside --vqvae"),
        (["--vqvae", tokenizer, "--output_dir", tmp_path], "contains --vqvae"),
        (["--vqvae", "id", "--token_dataset", tokens, "--output_dir", tokens, "--overwrite_output_dir"], "is --token_dataset"),
        (["--vqvae", "hub/id", "--dataset", images, "--output_dir", images / "run"], "lies inside --dataset"),
        (["--vqvae", "hub/id", "--dataset_dir", images, "--output_dir", images], "is --dataset_dir"),
    ]
    for argv, relation in cases:
        error = refused("train_prior", argv, capsys)
        assert relation in error and "Choose an --output_dir apart from its inputs." in error, error
    assert snapshot(tmp_path) == before and not (tokenizer / "prior").exists()
    # --dataset is read only without --token_dataset: an output beside it then is fine.
    argv = ["--vqvae", tokenizer, "--token_dataset", tokens, "--dataset", images, "--output_dir", images / "run"]
    args = import_recipe("train_prior").parse_args([str(arg) for arg in argv])
    assert args.output_dir == str(images / "run")


@pytest.mark.parametrize("recipe", ["train_vqvae", "train_classifier"])
def test_the_image_recipes_refuse_an_output_among_their_images(recipe, tmp_path, capsys):
    images = folder_with_files(tmp_path / "images", "a.png")
    for flag in ("--dataset", "--dataset_dir"):
        for output, relation in ((images, "is"), (images / "run", "lies inside"), (tmp_path, "contains")):
            error = refused(recipe, [flag, images, "--output_dir", output, "--overwrite_output_dir"], capsys)
            assert f"{relation} {flag} {images}" in error, error
    assert sorted(p.name for p in images.iterdir()) == ["a.png"]


def test_the_config_file_is_an_input(tmp_path, capsys):
    run = folder_with_files(tmp_path / "run", "config.yaml")
    (run / "config.yaml").write_text("max_steps: 3\n")
    error = refused("train_vqvae", ["--config", run / "config.yaml", "--output_dir", run, "--overwrite_output_dir"], capsys)
    assert "contains --config" in error
    assert (run / "config.yaml").read_text() == "max_steps: 3\n"


def test_the_encode_recipe_refuses_to_write_into_its_tokenizer_or_images(tmp_path, capsys):
    tokenizer = folder_with_files(tmp_path / "vqvae", "config.json")
    images = folder_with_files(tmp_path / "images", "a.png")
    for argv, relation in [
        (["--vqvae", tokenizer, "--dataset", "hub/id", "--output_dir", tokenizer / "tokens"], "lies inside --vqvae"),
        (["--vqvae", "hub/id", "--dataset", images, "--output_dir", images], "is --dataset"),
        (["--vqvae", "hub/id", "--dataset_dir", images, "--output_dir", tmp_path], "contains --dataset_dir"),
    ]:
        assert relation in refused("encode_dataset", argv, capsys)
    assert not (tokenizer / "tokens").exists()


def test_start_run_refuses_before_anything_is_made(tmp_path):
    tokenizer = folder_with_files(tmp_path / "vqvae", "config.json")
    args = argparse.Namespace(
        config=None, output_dir=str(tokenizer / "prior"), overwrite_output_dir=False, resume_from_checkpoint=None,
        seed=0, mixed_precision="no", gradient_accumulation_steps=1, report_to=None, save_on_each_node=False,
    )  # fmt: skip
    with pytest.raises(SystemExit, match="lies inside --vqvae"):
        training.start_run(args, inputs={"--vqvae": str(tokenizer)})
    assert sorted(p.name for p in tokenizer.iterdir()) == ["config.json"]  # no output folder, no lock file in it


def test_train_prior_with_its_tokenizer_as_output_exits_with_the_reason_and_keeps_the_tokenizer(tmp_path):
    """The launch of the report: --vqvae X --output_dir X --overwrite_output_dir deleted X, then failed to load it."""
    tokenizer = folder_with_files(tmp_path / "vqvae", "config.json", "model.safetensors")
    before = snapshot(tokenizer)
    command = [sys.executable, str(ROOT / "recipes" / "train_prior.py"), "--vqvae", str(tokenizer)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [*command, "--output_dir", str(tokenizer), "--overwrite_output_dir"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--output_dir {tokenizer} is --vqvae {tokenizer}" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(tokenizer) == before
