"""Evaluation: `larp-hf evaluate` and `larp-hf sweep` on tiny generated data (the classifier recipe is tested in tests/recipes)."""

import csv
import json
import subprocess
import sys

import PIL.Image
import pytest
import torch

from larp_hf import LarpPipeline
from larp_hf.evaluation import FeatureNetwork, memorisation
from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel

from .conftest import make_tiny_pipeline
from .test_cli import larp_hf
from .recipes.test_train_vqvae import ROOT


def test_memorisation_counts_copies_and_hamming_distances():
    generator = torch.Generator().manual_seed(0)
    training = torch.randint(0, 32, (100, 64), generator=generator)
    generated = training[:10].clone()
    generated[5:, :3] = (generated[5:, :3] + 1) % 32  # 5 copies, 5 grids 3 codes away from their source
    fresh = torch.randint(0, 32, (10, 64), generator=generator)
    result = memorisation(torch.cat([generated, fresh]).view(20, 8, 8), training, chunk_size=3)
    expected = (torch.cat([generated, fresh])[:, None] != training[None]).sum(-1).min(1).values
    assert result["exact_copies"] == 0.25
    assert result["hamming_to_nearest_mean"] == pytest.approx(expected.double().mean().item())
    assert result["hamming_to_nearest_histogram"][0] == 5 and result["hamming_to_nearest_histogram"][3] == 5
    assert sum(result["hamming_to_nearest_histogram"]) == 20 and result["hamming_to_nearest_quantiles"]["min"] == 0


def test_feature_network_refuses_images_of_another_shape():
    network = FeatureNetwork(LarpClassifierModel(LarpClassifierConfig(image_size=32)), "test features")
    with pytest.raises(ValueError, match="takes 1×32×32 images but these images are 1×16×16.*--image_size 16"):
        network(torch.rand(4, 1, 16, 16))


@pytest.fixture(scope="module")
def tiny_evaluation_setup(tmp_path_factory, tiny_image_dataset_dir):
    """A tiny pipeline folder and a feature network trained for 1 epoch by the recipe, both for 16×16 grey images."""
    folder = tmp_path_factory.mktemp("evaluation")
    make_tiny_pipeline().save_pretrained(folder / "pipe", sample_grid=False)
    command = [
        sys.executable, str(ROOT / "recipes" / "train_classifier.py"), "--dataset", tiny_image_dataset_dir,
        "--image_size", "16", "--hidden_channels", "8,16", "--feature_dim", "8", "--epochs", "1", "--batch_size", "16",
        "--output_dir", str(folder / "features"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def run_cli(capsys, *args, expect_success=True):
    return larp_hf(*args, expect_success=expect_success, capsys=capsys)


def test_evaluate_writes_json_and_markdown(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path, capsys):
    setup = tiny_evaluation_setup
    common = ["--feature-network", setup / "features", "--dataset", tiny_image_dataset_dir, "--cache-dir", tmp_path / "cache"]
    run_cli(capsys, "evaluate", setup / "pipe", *common, "--num-samples", 24, "--output-dir", tmp_path / "eval")
    results = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    for part in ("samples", "reconstructions", "real_baseline"):
        assert set(results[part]) == {"fid", "precision", "recall", "density", "coverage"}
        assert results[part]["fid"] >= 0 and 0 <= results[part]["precision"] <= 1
    assert 0 <= results["memorisation"]["exact_copies"] <= 1
    assert sum(results["memorisation"]["hamming_to_nearest_histogram"]) == 24
    network = LarpClassifierModel.from_pretrained(setup / "features")
    assert results["settings"]["feature_network_sha256"] == network.weights_sha256()
    table = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "FID (" in table and "classifier features)" in table and "Memorisation" in table
    assert list((tmp_path / "cache" / "features").glob("*.pt"))  # real features cached on disk

    _, err = run_cli(capsys, "evaluate", setup / "pipe", *common, "--num-samples", 5, "--output-dir", tmp_path / "x",
                     expect_success=False)
    assert "more samples than dimensions" in err
    wide = LarpClassifierModel(LarpClassifierConfig(image_size=32, feature_dim=8))
    wide.save_pretrained(tmp_path / "wide")
    _, err = run_cli(capsys, "evaluate", setup / "pipe", "--feature-network", tmp_path / "wide", "--dataset",
                     tiny_image_dataset_dir, "--output-dir", tmp_path / "y", expect_success=False)
    assert "takes 1×32×32 images but the pipeline's images are 1×16×16" in err


def test_sweep_writes_its_files_and_can_store_the_best_setting(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path, capsys):
    setup = tiny_evaluation_setup
    out, _ = run_cli(
        capsys, "sweep", setup / "pipe", "--feature-network", setup / "features", "--dataset", tiny_image_dataset_dir,
        "--temperature", "0.5,1.0", "--top-k", "0,4", "--num-samples", 16, "--output-dir", tmp_path / "sweep",
        "--cache-dir", tmp_path / "cache", "--write-generation-config",
    )  # fmt: skip
    with open(tmp_path / "sweep" / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(float(r["temperature"]), int(r["top_k"])) for r in rows] == [(0.5, 0), (1.0, 0), (0.5, 4), (1.0, 4)]
    best = min(rows, key=lambda row: float(row["fid"]))
    assert f"Best by FID: temperature {best['temperature']}" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert PIL.Image.open(tmp_path / "sweep" / "sweep.png").size[0] > 500
    defaults = LarpPipeline.from_pretrained(setup / "pipe").sampling_defaults()
    assert defaults["temperature"] == float(best["temperature"]) and defaults["top_k"] == int(best["top_k"])

    _, err = run_cli(capsys, "sweep", setup / "pipe", "--feature-network", setup / "features", "--top-k", "64",
                     "--output-dir", tmp_path / "bad", expect_success=False)
    assert "between 0 (off) and the codebook size (32), got 64" in err
    _, err = run_cli(capsys, "sweep", setup / "pipe", "--feature-network", tmp_path / "nothing", "--output-dir",
                     tmp_path / "bad", expect_success=False)
    assert "train_classifier.py" in err


def test_inception_features_say_what_they_need(tmp_path):
    from larp_hf.evaluation import load_feature_network

    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install torch-fidelity"):
            load_feature_network("inception")
    else:
        with pytest.raises(ValueError, match="pt_inception-2015-12-05"):
            load_feature_network(f"inception:{tmp_path / 'missing.pth'}")
    with pytest.raises(ValueError, match="No feature network in"):
        load_feature_network(tmp_path)


def test_the_evaluate_recipe_is_the_evaluate_command():
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "evaluate.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "usage: larp-hf evaluate" in result.stdout and "--num-samples" in result.stdout


def test_feature_network_reads_integer_images_as_0_to_255(tiny_image_dataset_dir):
    from larp_hf.evaluation import real_images

    images, _ = real_images(tiny_image_dataset_dir, "test", 16, 1)
    assert images.dtype == torch.uint8 and images.max() > 1
    network = FeatureNetwork(LarpClassifierModel(LarpClassifierConfig(image_size=16, hidden_channels=[8])), "test")
    as_uint8, as_int64, as_float = network(images), network(images.long()), network(images.float() / 255)
    assert torch.equal(as_uint8, as_int64) and torch.equal(as_uint8, as_float)
