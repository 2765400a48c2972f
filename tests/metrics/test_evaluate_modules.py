"""The `evaluate` modules load offline from their folders and agree with larp_hf.metrics; FID agrees with torchmetrics."""

import evaluate
import pytest
import torch
from torch import nn

from larp_hf.metrics import (
    EVALUATE_MODULES,
    density_coverage,
    evaluate_module_path,
    frechet_distance,
    precision_recall,
    top_k_accuracy,
)
from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel


def features(n, d=6, seed=0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_every_module_loads_offline_from_its_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in EVALUATE_MODULES:
        assert evaluate.load(evaluate_module_path(name)).name == name
    with pytest.raises(ValueError, match="Unknown metric"):
        evaluate_module_path("inception_score")


def test_feature_modules_match_the_functions_and_accumulate_batches():
    real, generated = features(300, seed=0), features(200, seed=1, shift=0.5)
    fid = evaluate.load(evaluate_module_path("frechet_distance"))
    for start in range(0, 200, 64):  # generated features arrive batch by batch
        fid.add_batch(generated_features=generated[start : start + 64].numpy())
    assert fid.compute(real_features=real.numpy())["frechet_distance"] == pytest.approx(frechet_distance(real, generated), rel=1e-12)

    pr = evaluate.load(evaluate_module_path("precision_recall"))
    assert pr.compute(generated_features=generated.numpy(), real_features=real.numpy(), k=4) == precision_recall(real, generated, k=4)
    dc = evaluate.load(evaluate_module_path("density_coverage"))
    assert dc.compute(generated_features=generated.numpy(), real_features=real.numpy()) == density_coverage(real, generated)


def test_top_k_accuracy_module():
    logits = torch.randn(50, 12, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 12, (50,), generator=torch.Generator().manual_seed(1))
    module = evaluate.load(evaluate_module_path("top_k_accuracy"))
    result = module.compute(predictions=logits.numpy(), references=labels.numpy(), k=3)
    assert result["top_k_accuracy"] == pytest.approx(top_k_accuracy(logits, labels, k=3))


class ClassifierFeatures(nn.Module):
    """What torchmetrics expects of a custom feature extractor: images in, (N, num_features) out."""

    def __init__(self, model: LarpClassifierModel):
        super().__init__()
        self.model = model.eval()
        self.num_features = model.config.feature_dim

    def train(self, mode: bool = True):
        return super().train(False)  # batch norm must use its running statistics, whatever the metric's mode

    def forward(self, images):
        return self.model.get_image_features(images.float() / 127.5 - 1)


def test_fid_agrees_with_torchmetrics_on_the_same_feature_network():
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    torch.manual_seed(0)
    network = LarpClassifierModel(LarpClassifierConfig(image_size=16, hidden_channels=[8, 16], feature_dim=16))
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (200, 1, 16, 16), generator=generator, dtype=torch.uint8)
    fake = torch.randint(0, 60, (150, 1, 16, 16), generator=generator, dtype=torch.uint8)  # much darker
    with torch.no_grad():  # untrained features are tiny: calibrate batch norm on the real images, scale up
        network.feature_layer[0].weight *= 10
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None  # running statistics = this batch's
        network.train()(real / 127.5 - 1)
        network.eval()

    # torchmetrics turns the features to float64 before its statistics, as we do.
    theirs = fid_module.FrechetInceptionDistance(feature=ClassifierFeatures(network), normalize=False)
    theirs.update(real, real=True)
    theirs.update(fake, real=False)
    with torch.no_grad():
        ours = frechet_distance(network.get_image_features(real / 127.5 - 1), network.get_image_features(fake / 127.5 - 1))
    assert ours > 0.1
    assert ours == pytest.approx(float(theirs.compute()), rel=1e-3)
