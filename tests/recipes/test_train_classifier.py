"""The classifier recipe (the feature network behind FID), run as users run it: in a subprocess."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from larp_hf.evaluation import FeatureNetwork
from larp_hf.models.classifier import LarpClassifierModel

from .test_train_vqvae import ROOT


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory, tiny_image_dataset_dir):
    """A classifier trained for 1 epoch by the recipe on 16×16 grey images."""
    folder = tmp_path_factory.mktemp("classifier") / "features"
    command = [
        sys.executable, str(ROOT / "recipes" / "train_classifier.py"), "--dataset", tiny_image_dataset_dir,
        "--image_size", "16", "--hidden_channels", "8,16", "--feature_dim", "8", "--epochs", "1", "--batch_size", "16",
        "--output_dir", str(folder),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
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
    common = [
        sys.executable, str(ROOT / "recipes" / "train_classifier.py"), "--dataset", tiny_image_dataset_dir,
        "--image_size", "16", "--hidden_channels", "8", "--feature_dim", "8", "--batch_size", "16",
    ]  # fmt: skip

    def run(*args):
        result = subprocess.run([*common, *map(str, args)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run("--epochs", 2, "--output_dir", tmp_path / "straight")
    checkpoints = tmp_path / "straight" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    # A run interrupted after its first epoch: only that epoch's checkpoint exists.
    shutil.copytree(checkpoints / "checkpoint-1", tmp_path / "resumed" / "checkpoints" / "checkpoint-1")
    result = run("--epochs", 2, "--output_dir", tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    assert "after epoch 1" in result.stdout

    straight = LarpClassifierModel.from_pretrained(tmp_path / "straight").state_dict()
    resumed = LarpClassifierModel.from_pretrained(tmp_path / "resumed").state_dict()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]
    assert metrics["test_accuracy"] == json.loads((tmp_path / "straight" / "metrics.json").read_text())["test_accuracy"]
