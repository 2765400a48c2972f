"""
What evaluation refuses or distrusts before it samples: splits too small for FID's covariance, degenerate feature
spaces, cached real features computed from something else; and the offline feature space for unlabelled data.
"""

import hashlib
import json
import logging
from unittest import mock

import datasets
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from larp_hf import LarpPipeline
from larp_hf.evaluation import (
    FeatureNetwork,
    RandomFeatureNetwork,
    cached_real_features,
    evaluate_pipeline,
    real_image_dataset,
    sweep_pipeline,
)
from larp_hf.metrics import frechet_distance
from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel

from .conftest import make_images, make_tiny_pipeline, spread_features
from .test_cli import larp_hf


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def no_sampling(monkeypatch):
    """Any sampling fails the test: the refusals must come first."""
    monkeypatch.setattr(LarpPipeline, "__call__", mock.Mock(side_effect=AssertionError("sampled before refusing")))


def classifier_features(feature_dim: int, spread: bool = True) -> FeatureNetwork:
    torch.manual_seed(0)
    config = LarpClassifierConfig(image_size=16, hidden_channels=[8], feature_dim=feature_dim, num_classes=2)
    model = LarpClassifierModel(config)
    return FeatureNetwork(spread_features(model) if spread else model, f"{feature_dim} test features")


def test_a_real_split_smaller_than_the_features_is_refused_before_sampling(tiny_image_dataset_dir, tmp_path,
                                                                           no_sampling):
    """The tiny dataset's test split has 16 images, its train split 64."""
    pipeline = make_tiny_pipeline()
    network = classifier_features(16)
    with pytest.raises(ValueError, match=r"The 'test' split of .* has 16 images, too few for FID on 16-dimensional "
                                         r"features .*at least 17.*`real_split`"):  # fmt: skip
        evaluate_pipeline(pipeline, network, dataset=tiny_image_dataset_dir, num_samples=24, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"The 'test' split .* has 16 images.*`baseline_split`"):
        evaluate_pipeline(pipeline, network, dataset=tiny_image_dataset_dir, real_split="train",
                          baseline_split="test", num_samples=24, cache_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=r"has 16 images, too few .*`real_split`"):
        sweep_pipeline(pipeline, network, [1.0], [0], dataset=tiny_image_dataset_dir, num_samples=24, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"`num_samples` = 16 is too few for 16-dimensional features.*Raise `num_samples`"):
        evaluate_pipeline(pipeline, network, dataset=tiny_image_dataset_dir, num_samples=16, cache_dir=tmp_path)
    assert not (tmp_path / "features").exists()  # nothing computed either


def test_the_cli_names_the_flags_that_fix_a_small_split(tiny_image_dataset_dir, tmp_path, capsys, no_sampling):
    make_tiny_pipeline().save_pretrained(tmp_path / "pipe", sample_grid=False)
    _, err = larp_hf("evaluate", tmp_path / "pipe", "--feature-network", "random", "--dataset", tiny_image_dataset_dir,
                     "--num-samples", 100, "--output-dir", tmp_path / "eval", "--cache-dir", tmp_path / "cache",
                     expect_success=False, capsys=capsys)  # fmt: skip
    assert "has 16 images, too few for FID on 64-dimensional features" in err and "`--real-split`" in err
    assert not (tmp_path / "eval").exists()


def test_a_degenerate_feature_space_is_refused_not_scored_zero(tiny_image_dataset_dir, tmp_path, no_sampling, capsys):
    generator = torch.Generator().manual_seed(0)
    collapsed = 3.0 + 1e-6 * torch.randn(200, 8, generator=generator, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`real_features` are degenerate: their total variance is \d\.\d+e-12"):
        frechet_distance(collapsed, 3.0 + 1e-6 * torch.randn(100, 8, generator=generator, dtype=torch.float64))

    # An untrained classifier as it comes (default init): features of std ~1e-7.
    untrained = classifier_features(8, spread=False)
    with pytest.raises(ValueError, match=r"The features of .* test are degenerate.*does not separate these images"):
        evaluate_pipeline(make_tiny_pipeline(), untrained, dataset=tiny_image_dataset_dir, num_samples=24,
                          cache_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="degenerate"):
        sweep_pipeline(make_tiny_pipeline(), untrained, [1.0], [0], dataset=tiny_image_dataset_dir, num_samples=24,
                       cache_dir=tmp_path)  # fmt: skip

    # Through the CLI: an error, and no FID 0.000 in the model card.
    make_tiny_pipeline().save_pretrained(tmp_path / "pipe", sample_grid=False)
    untrained.model.save_pretrained(tmp_path / "features")
    card_before = (tmp_path / "pipe" / "README.md").read_text()
    _, err = larp_hf("evaluate", tmp_path / "pipe", "--feature-network", tmp_path / "features", "--dataset",
                     tiny_image_dataset_dir, "--num-samples", 24, "--output-dir", tmp_path / "eval", "--cache-dir",
                     tmp_path / "cache", expect_success=False, capsys=capsys)  # fmt: skip
    assert "are degenerate" in err and (tmp_path / "pipe" / "README.md").read_text() == card_before


def _cache_files(folder):
    return sorted((folder / "features").glob("*.safetensors"))


def test_cached_real_features_are_keyed_and_checked(tiny_image_dataset_dir, tmp_path, caplog):
    network = classifier_features(8)
    pixels, fingerprint = real_image_dataset(tiny_image_dataset_dir, "train", 16, 1)
    source = {"dataset": tiny_image_dataset_dir, "split": "train"}

    def features(**kwargs):
        arguments = {"cache_dir": tmp_path, "source": source, **kwargs}
        return cached_real_features(kwargs.pop("network", network), pixels, fingerprint, **arguments)

    fresh = features()
    (path,) = _cache_files(tmp_path)
    with safe_open(path, framework="pt") as handle:
        key = json.loads(handle.metadata()["key"])
    assert key["feature_network_sha256"] == network.weights_sha256 and key["num_rows"] == 64
    assert key["source"] == {"dataset": tiny_image_dataset_dir, "split": "train"}
    torch.testing.assert_close(features(), fresh)  # read back
    assert _cache_files(tmp_path) == [path]

    # What it was computed from is the key: another split's description, other rows, another network: other files.
    features(source={**source, "split": "test"})
    features(rows=[3, 1, 2])
    before = set(_cache_files(tmp_path))
    cached_real_features(classifier_features(4), pixels, fingerprint, cache_dir=tmp_path, source=source)
    (foreign,) = set(_cache_files(tmp_path)) - before  # another network's features of the same images
    assert len(before) == 3

    def tamper(tensor, metadata):
        save_file({"features": tensor.contiguous()}, path, metadata=metadata)

    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    caplog.set_level(logging.WARNING, logger="larp_hf.evaluation.real_data")
    edited = fresh.clone()
    edited[40] += 5.0
    tamper(edited, metadata)  # features edited, their digest not
    torch.testing.assert_close(features(), fresh)
    assert "do not match their recorded SHA-256" in caplog.text

    caplog.clear()
    edited = fresh.clone()
    edited[0] += 5.0  # a consistent forgery: the digest recomputed; the spot check recomputes the first rows
    tamper(edited, {**metadata, "features_sha256": hashlib.sha256(edited.numpy().tobytes()).hexdigest()})
    torch.testing.assert_close(features(), fresh)
    assert "first 8 rows differ" in caplog.text

    caplog.clear()
    path.write_bytes(foreign.read_bytes())  # another network's file under this key's name
    torch.testing.assert_close(features(), fresh)
    assert "computed from something else (differs in feature_network, feature_network_sha256)" in caplog.text

    caplog.clear()
    path.write_bytes(b"not a safetensors file")
    torch.testing.assert_close(features(), fresh)
    assert "unreadable" in caplog.text


@pytest.fixture(scope="module")
def unlabelled_dataset_dir(tmp_path_factory):
    """Images only (no label column): 100 train and 80 test 16×16 grey images."""
    folder = tmp_path_factory.mktemp("unlabelled")
    features = datasets.Features({"image": datasets.Image()})
    splits = {split: datasets.Dataset.from_dict({"image": make_images(count, seed=seed)}, features=features)
              for split, count, seed in (("train", 100, 0), ("test", 80, 1))}  # fmt: skip
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return str(folder)


def test_the_random_feature_network_is_fixed_by_its_seed_and_spreads():
    images = torch.rand(70, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    first, again, other = RandomFeatureNetwork(0), RandomFeatureNetwork(0), RandomFeatureNetwork(1)
    assert first.weights_sha256 == again.weights_sha256 != other.weights_sha256
    features = first(images)
    assert features.shape == (70, 64) and torch.equal(features, again(images))
    assert features.var(dim=0).sum() > 1e-3  # far from degenerate, with no training
    torch.testing.assert_close(first(images.expand(-1, 3, -1, -1)), features)  # grey is repeated to RGB
    with pytest.raises(ValueError, match="grey or RGB images of at least 8×8, but these images are 4×16×16"):
        first(torch.rand(2, 4, 16, 16))
    from larp_hf.evaluation import load_feature_network

    assert load_feature_network("random:1").weights_sha256 == other.weights_sha256
    with pytest.raises(ValueError, match="`random:SEED` takes a non-negative integer seed, got 'x'"):
        load_feature_network("random:x")


def test_evaluate_works_offline_on_unlabelled_data(unlabelled_dataset_dir, tmp_path, capsys):
    make_tiny_pipeline().save_pretrained(tmp_path / "pipe", sample_grid=False)
    out, _ = larp_hf("evaluate", tmp_path / "pipe", "--feature-network", "random", "--dataset", unlabelled_dataset_dir,
                     "--num-samples", 70, "--output-dir", tmp_path / "eval", "--cache-dir", tmp_path / "cache",
                     "--batch-size", 70, capsys=capsys)  # fmt: skip
    results = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert results["settings"]["feature_network"] == "seed-0 random-network features"
    assert results["settings"]["feature_network_sha256"] == RandomFeatureNetwork(0).weights_sha256
    for part in ("samples", "reconstructions", "real_baseline"):
        assert results[part]["fid"] > 0
    assert results["samples"]["fid"] > results["real_baseline"]["fid"]  # an untrained prior is far from the data
    assert "random-network features" in (tmp_path / "pipe" / "README.md").read_text()
