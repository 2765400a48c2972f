"""
`--feature-network inception`: torch-fidelity's own Inception-v3 module with random weights of its architecture (no
download here), read from a local weights file; its features against the module's own loading path, FID against
torch-fidelity's `fid_statistics_to_metric`, and the offline refusals before any sampling.
"""

import urllib.error
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file

from larp_hf import LarpPipeline
from larp_hf.evaluation import InceptionFeatureNetwork, load_feature_network
from larp_hf.metrics import frechet_distance

from .test_cli import larp_hf


inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """A 299×299 forward pass takes about 1 s on one thread; on a busy 2-core machine two threads wait on each other
    (10× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """
    torch-fidelity's FeatureExtractorInceptionV3 built without its weights (the download and the loading patched
    out), given seeded He-normal weights (features of a trained network's scale, not the ~1e-7 of default init) and
    random batch-norm statistics, saved as a .pth of plain tensors as torch-fidelity's own file is.
    """
    def no_download(*args, **kwargs):
        raise AssertionError("the test tried to download the Inception weights")

    with mock.patch.object(inception, "load_state_dict_from_url", lambda *_, **__: {}), \
            mock.patch.object(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *_, **__: None):
        module = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for name, tensor in module.state_dict().items():
        if name.endswith("weight") and tensor.ndim > 1:  # convolutions and the classifier
            tensor = torch.randn(tensor.shape, generator=generator) * (2 / tensor[0].numel()) ** 0.5
        elif name.endswith("running_mean"):
            tensor = torch.randn(tensor.shape, generator=generator) * 0.1
        elif name.endswith("running_var"):
            tensor = 0.5 + torch.rand(tensor.shape, generator=generator)
        state_dict[name] = tensor.contiguous()
    path = tmp_path_factory.mktemp("inception") / InceptionFeatureNetwork.WEIGHTS_FILE
    torch.save(state_dict, path)
    with mock.patch.object(inception, "load_state_dict_from_url", no_download):
        yield path


def test_features_are_torch_fidelitys_own_on_the_same_weights(random_inception_weights):
    ours = load_feature_network(f"inception:{random_inception_weights}")
    # The reference: torch-fidelity's module loading the same file by its own path (torch.load of the file).
    theirs = inception.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(random_inception_weights)
    )
    # One image a side (a forward pass costs seconds on a CPU): grey, non-square, given as floats in [0, 1], so the
    # quantisation to uint8 and the repetition to RGB are part of what is compared.
    grey = torch.randint(0, 256, (1, 1, 20, 24), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    features = ours(grey.float() / 255)
    reference = theirs(grey.expand(-1, 3, -1, -1))[0].double()
    assert features.shape == (1, 2048) and features.dtype == torch.float64
    assert features.std() > 0.01  # not a degenerate network: the comparison means something
    torch.testing.assert_close(features, reference, rtol=0, atol=0)
    assert ours.name == "Inception-v3 pool3 features" and len(ours.weights_sha256) == 64


def test_the_weights_file_is_read_without_unpickling_and_as_safetensors(random_inception_weights, tmp_path):
    weights = torch.load(random_inception_weights, weights_only=True)
    save_file(weights, tmp_path / "inception.safetensors")
    from_safetensors = load_feature_network(f"inception:{tmp_path / 'inception.safetensors'}")
    assert from_safetensors.weights_sha256 == load_feature_network(f"inception:{random_inception_weights}").weights_sha256

    class Planted:
        def __reduce__(self):
            return (exec, ("raise SystemExit('the pickle ran')",))

    torch.save({"Conv2d_1a_3x3.conv.weight": Planted()}, tmp_path / "planted.pth")
    with pytest.raises(ValueError, match="could not be read as Inception-v3 weights.*weights-inception-2015-12-05"):
        load_feature_network(f"inception:{tmp_path / 'planted.pth'}")
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        load_feature_network(f"inception:{tmp_path / 'list.pth'}")
    save_file({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="do not fit torch-fidelity's network"):
        load_feature_network(f"inception:{tmp_path / 'other.safetensors'}")


def test_our_fid_is_torch_fidelitys_on_the_same_features():
    """The formula does not depend on the width; 256 features keep the test fast (2048: 1.5e-11 apart, measured)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    generator = torch.Generator().manual_seed(0)
    mix = torch.randn(256, 256, generator=generator) / 16  # correlated features, as a network's are
    real = torch.randn(600, 256, generator=generator, dtype=torch.float64) @ mix.double() + 1.0
    generated = 1.2 * torch.randn(500, 256, generator=generator, dtype=torch.float64) @ mix.double() + 1.1
    theirs = fid_statistics_to_metric(fid_features_to_statistics(real), fid_features_to_statistics(generated), False)
    ours = frechet_distance(real, generated)
    assert ours > 1.0
    assert ours == pytest.approx(theirs[KEY_METRIC_FID], rel=1e-6)


def test_without_network_or_file_the_error_names_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty cache
    assert InceptionFeatureNetwork.WEIGHTS_URL == inception.URL_INCEPTION_V3  # the file torch-fidelity itself reads
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"weights-inception-2015-12-05-6726825d\.pth are not in .*HF_HUB_OFFLINE.*"
                                         r"inception:PATH"):  # fmt: skip
        load_feature_network("inception")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def unreachable(url, destination, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(ValueError, match="could not be downloaded .*name resolution.*weights-inception-2015-12-05"):
        load_feature_network("inception")
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing.pth'} is not a file.*weights-inception-2015-12-05"):
        load_feature_network(f"inception:{tmp_path / 'missing.pth'}")


def test_a_file_in_torchs_hub_cache_is_used_offline(random_inception_weights, tmp_path, monkeypatch):
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / InceptionFeatureNetwork.WEIGHTS_FILE).symlink_to(random_inception_weights)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = load_feature_network("inception")
    assert cached.weights_sha256 == load_feature_network(f"inception:{random_inception_weights}").weights_sha256


def test_evaluate_refuses_inception_offline_before_sampling(tmp_path, monkeypatch, capsys, tiny_image_dataset_dir):
    from .conftest import make_tiny_pipeline

    make_tiny_pipeline().save_pretrained(tmp_path / "pipe", sample_grid=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(LarpPipeline, "__call__", mock.Mock(side_effect=AssertionError("sampled")))
    _, err = larp_hf("evaluate", tmp_path / "pipe", "--feature-network", "inception", "--dataset",
                     tiny_image_dataset_dir, "--output-dir", tmp_path / "eval", expect_success=False, capsys=capsys)
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "--feature-network inception:PATH" in err and "sampled" not in err
    assert not (tmp_path / "eval").exists()
