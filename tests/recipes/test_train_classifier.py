"""
The classifier recipe (the feature network behind FID), run as users run it: torchrun for two processes, and
otherwise the script's main in a process of its own forked from a preloaded server (tests/recipes/forked_runs.py).
"""

import json
import shutil
import subprocess

import pytest
import torch
import yaml

from larp_hf.evaluation import FeatureNetwork
from larp_hf.models.classifier import LarpClassifierModel

from .forked_runs import run_recipe
from .test_train_vqvae import ROOT, import_recipe, launcher, run


RECIPE = ROOT / "recipes" / "train_classifier.py"


def train_classifier(*args, expect_success: bool = True) -> subprocess.CompletedProcess:
    """`python recipes/train_classifier.py ARGS`, forked from the preloaded server."""
    return run_recipe("train_classifier", *args, expect_success=expect_success)


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory, tiny_image_dataset_dir):
    """A classifier trained for 1 epoch by the recipe on 16×16 grey images."""
    folder = tmp_path_factory.mktemp("classifier") / "features"
    train_classifier(
        "--dataset", tiny_image_dataset_dir, "--image_size", 16, "--hidden_channels", "8,16", "--feature_dim", 8,
        "--epochs", 1, "--batch_size", 16, "--output_dir", folder,
    )  # fmt: skip
    return folder


def test_classifier_recipe_saves_a_named_classifier(trained_classifier):
    features = trained_classifier
    metrics = json.loads((features / "metrics.json").read_text())
    model = LarpClassifierModel.from_pretrained(features)
    assert metrics["weights_sha256"] == model.weights_sha256()
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["history"][0]["epoch"] == 1
    assert model.config.num_classes == 2 and model.config.feature_dim == 8
    assert FeatureNetwork.from_pretrained(features).name.endswith("classifier features")


def test_classifier_recipe_resumes_exactly_where_it_stopped(tiny_image_dataset_dir, tmp_path):
    common = ["--dataset", tiny_image_dataset_dir, "--image_size", 16, "--hidden_channels", 8, "--feature_dim", 8]
    common += ["--batch_size", 16]
    train_classifier(*common, "--epochs", 2, "--output_dir", tmp_path / "straight")
    checkpoints = tmp_path / "straight" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    # A run interrupted after its first epoch: only that epoch's checkpoint exists.
    shutil.copytree(checkpoints / "checkpoint-1", tmp_path / "resumed" / "checkpoints" / "checkpoint-1")
    result = train_classifier(*common, "--epochs", 2, "--output_dir", tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    assert "after epoch 1" in result.stdout

    straight = LarpClassifierModel.from_pretrained(tmp_path / "straight").state_dict()
    resumed = LarpClassifierModel.from_pretrained(tmp_path / "resumed").state_dict()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]
    assert metrics["test_accuracy"] == json.loads((tmp_path / "straight" / "metrics.json").read_text())["test_accuracy"]


def test_two_processes_train_from_a_config_and_end_with_the_same_weights(tiny_image_dataset_dir, tmp_path):
    model = {"image_size": 16, "hidden_channels": [8], "feature_dim": 8}
    config = {"dataset": tiny_image_dataset_dir, "epochs": 2, "batch_size": 8, "model": model}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    output_dir = tmp_path / "out"
    result = run([*launcher(2), str(RECIPE), "--config", str(tmp_path / "tiny.yaml"), "--output_dir", str(output_dir)])
    assert "2 process(es) on cpu" in result.stdout and "Parameters identical across 2 process(es)." in result.stdout
    # 64 images in batches of 8 on each of 2 processes: 4 optimizer steps an epoch, a checkpoint named by its epoch.
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert [(entry["epoch"], entry["step"]) for entry in metrics["history"]] == [(1, 4), (2, 8)]
    assert metrics["dataset"] == tiny_image_dataset_dir and (output_dir / "preprocessor_config.json").is_file()
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    model = LarpClassifierModel.from_pretrained(output_dir)
    assert model.config.hidden_channels == [8] and metrics["weights_sha256"] == model.weights_sha256()


def test_another_run_is_not_overwritten_by_accident(trained_classifier, tiny_image_dataset_dir, tmp_path, capsys):
    common = ["--dataset", tiny_image_dataset_dir, "--image_size", 16, "--hidden_channels", 8]

    def refusal(output_dir) -> str:  # argparse's error, in this process: before any work
        with pytest.raises(SystemExit) as exit_info:
            import_recipe("train_classifier").parse_args([*map(str, common), "--output_dir", str(output_dir)])
        assert exit_info.value.code != 0
        return capsys.readouterr().err

    before = (trained_classifier / "model.safetensors").read_bytes()
    message = refusal(trained_classifier)
    assert "already holds a run" in message and "--overwrite_output_dir" in message
    assert (trained_classifier / "model.safetensors").read_bytes() == before
    # Checkpoints alone (a run interrupted before it wrote metrics.json) hold a run too.
    (tmp_path / "interrupted" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    assert "already holds a run" in refusal(tmp_path / "interrupted")
    train_classifier(*common, "--epochs", 1, "--output_dir", tmp_path / "interrupted", "--overwrite_output_dir")
    assert json.loads((tmp_path / "interrupted" / "metrics.json").read_text())["epoch"] == 1


def test_model_fields_are_checked_against_the_classifier_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train_classifier = import_recipe("train_classifier")
    for argv, message in [
        (["--model.feature_dm", "8"], "unknown LarpClassifierConfig fields ['feature_dm']"),
        (["--image_size", "18", "--hidden_channels", "8,16"], "must be divisible by 2**len(hidden_channels)"),
        (["--model.num_classes", "3"], "num_classes comes from the dataset"),
    ]:
        with pytest.raises(SystemExit):
            train_classifier.parse_args(argv)
        assert message in capsys.readouterr().err
    # The old model flags are shorthands for --model.FIELD.
    args = train_classifier.parse_args(["--image_size", "16", "--model.feature_dim", "8", "--hidden_channels", "4,8"])
    assert args.model == {"image_size": 16, "feature_dim": 8, "hidden_channels": [4, 8]}


def test_the_shipped_config_parses_to_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's relative output_dir must not meet a run of the user's
    train_classifier = import_recipe("train_classifier")
    config = ROOT / "recipes" / "configs" / "classifier_fashion_mnist.yaml"
    from_config, defaults = train_classifier.parse_args(["--config", str(config)]), train_classifier.parse_args([])
    # What the data decides by default (padding, epochs) the config pins to Fashion-MNIST's choice.
    data_decided = {"pad_to_size": True, "epochs": 4, "dataset_reason": "given"}
    assert {name: vars(from_config)[name] for name in data_decided} == data_decided
    expected = {**vars(defaults), "config": str(config), "model": from_config.model, **data_decided}
    assert vars(from_config) == expected
    config_class = train_classifier.LarpClassifierConfig
    assert config_class(**from_config.model).to_dict() == config_class().to_dict()
