"""Feature networks: the spaces the sample metrics are computed in (a domain classifier, or Inception-v3)."""

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..models import LarpImageProcessor
from ..models.classifier import LarpClassifierModel


logger = logging.getLogger(__name__)


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Integer images are 0-255 values (whatever the integer type); float images are [0, 1] and get quantised."""
    if images.is_floating_point():
        return (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images.clamp(0, 255).to(torch.uint8)


def to_pixel_values(image_processor: LarpImageProcessor, pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 images already at the model's size -> the model's normalised float inputs."""
    return image_processor(pixels, do_resize=False, return_tensors="pt")["pixel_values"]


class FeatureNetwork:
    """
    A trained `LarpClassifierModel` used as the feature space of the metrics: images -> (N, D) features.
    `name` says what the features are (scores are reported as e.g. "FID (fashion_mnist classifier features)") and
    `weights_sha256` names the exact network.

    Subclasses for other networks override `_features` (one batch of uint8 images -> features), `feature_dim` and
    `check_images`; the batching loop is this class's `__call__`.
    """

    batch_size = 500

    def __init__(self, model: LarpClassifierModel, name: str, image_processor: LarpImageProcessor | None = None):
        self.model = model.eval()
        self.name = name
        self.weights_sha256 = model.weights_sha256()
        config = model.config
        self.image_processor = image_processor or LarpImageProcessor(
            num_channels=config.in_channels, size={"height": config.image_size, "width": config.image_size}
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "FeatureNetwork":
        """A folder written by recipes/train_classifier.py; its metrics.json names the dataset it learnt."""
        model_type = json.loads((Path(path) / "config.json").read_text()).get("model_type")
        expected = LarpClassifierModel.config_class.model_type
        if model_type != expected:
            raise ValueError(
                f"{path} holds a {model_type!r} model, not a feature network ({expected!r}, from "
                "recipes/train_classifier.py): its features would be meaningless. Pass the classifier's folder."
            )
        model, loading_info = LarpClassifierModel.from_pretrained(path, output_loading_info=True)
        missing = sorted(map(str, [*loading_info["missing_keys"], *loading_info["mismatched_keys"]]))
        if missing:
            raise ValueError(f"{path} lacks trained weights for {missing[:5]}: it is not a complete feature network.")
        metrics_path = Path(path) / "metrics.json"
        dataset = json.loads(metrics_path.read_text()).get("dataset") if metrics_path.is_file() else None
        has_processor = (Path(path) / "preprocessor_config.json").is_file()
        image_processor = LarpImageProcessor.from_pretrained(path) if has_processor else None
        return cls(model, f"{dataset or Path(path).name} classifier features", image_processor)

    @property
    def feature_dim(self) -> int:
        return self.model.config.feature_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it takes: its input size, or the size inside the padding its processor adds."""
        size = self.image_processor.output_size
        return (self.model.config.in_channels, size["height"], size["width"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "FeatureNetwork":
        self.model.to(device)
        return self

    def check_images(self, channels: int, size: int | tuple[int, int], what: str):
        """Raise a `ValueError` naming `what` when images of this shape (`size`: a side or (H, W)) are not what the
        network takes."""
        height, width = (size, size) if isinstance(size, int) else size
        if (channels, height, width) != self.image_shape:
            raise ValueError(
                f"The feature network takes {self.image_shape[0]}×{self.image_shape[1]}×{self.image_shape[2]} images "
                f"but {what} are {channels}×{height}×{width}. Train a feature network for this size "
                f"(recipes/train_classifier.py --image_size N --in_channels {channels}, with --pad_to_size when "
                "the tokenizer pads), or use Inception-v3 features (`inception`), which take images of any size."
            )

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) uint8 -> (B, D): normalised as the network was trained (its image processor)."""
        return self.model.get_image_features(to_pixel_values(self.image_processor, pixels).to(self.device))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int | None = None, desc: str | None = None) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] (float) or [0, 255] (any integer type) -> (N, D) float64 features."""
        self.check_images(images.shape[1], tuple(images.shape[-2:]), "these images")
        batch_size = batch_size or self.batch_size
        features = []
        for start in tqdm(range(0, len(images), batch_size), desc=desc or "Features", disable=desc is None):
            # Quantised like a saved PNG, so samples and real images reach the network alike.
            batch = as_uint8(images[start : start + batch_size])
            features.append(self._features(batch).double().cpu())
        return torch.cat(features)


class InceptionFeatureNetwork(FeatureNetwork):
    """
    The standard FID feature space: Inception-v3's 2048 pool3 features (the TF-compatible network and bilinear resize
    to 299×299 of torch-fidelity, the reference PyTorch port). Grey images are repeated to RGB. Needs
    `pip install torch-fidelity` and either the weights file `pt_inception-2015-12-05-6726825d.pth` (`weights_path`) or
    network access to download it.
    """

    WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
    batch_size = 100  # 299×299 inputs

    def __init__(self, weights_path: str | os.PathLike | None = None):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise ValueError(
                "Inception-v3 features need torch-fidelity (`pip install torch-fidelity`); or use a domain classifier "
                "from recipes/train_classifier.py, which works offline."
            ) from None
        if weights_path is not None and not Path(weights_path).is_file():
            raise ValueError(
                f"`weights_path` {weights_path} is not a file; download {self.WEIGHTS_FILE} once and pass its path."
            )
        weights = None if weights_path is None else str(weights_path)
        self.model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
        self.name = "Inception-v3 pool3 features"
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.weights_sha256 = digest.hexdigest()

    @property
    def feature_dim(self) -> int:
        return 2048

    def check_images(self, channels: int, size: int | tuple[int, int], what: str):
        if channels not in (1, 3):
            raise ValueError(f"Inception-v3 takes grey or RGB images, but {what} have {channels} channels.")

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels  # (B, 3, H, W) uint8
        return self.model(pixels.to(self.device))[0]


def load_feature_network(spec: str | os.PathLike) -> FeatureNetwork:
    """`spec`: `inception` or `inception:WEIGHTS.pth` for Inception-v3, else a folder from train_classifier.py."""
    spec = str(spec)
    if spec == "inception" or spec.startswith("inception:"):
        network = InceptionFeatureNetwork(spec.partition(":")[2] or None)
    elif (Path(spec) / "config.json").is_file():
        network = FeatureNetwork.from_pretrained(spec)
    else:
        raise ValueError(
            f"No feature network in {spec}. Train one with `accelerate launch recipes/train_classifier.py "
            "--output_dir DIR` (Fashion-MNIST: minutes on a CPU), or pass `inception[:WEIGHTS.pth]`."
        )
    logger.info("Feature network: %s (weights SHA-256 %s)", network.name, network.weights_sha256)
    return network


__all__ = ["FeatureNetwork", "InceptionFeatureNetwork", "as_uint8", "load_feature_network", "to_pixel_values"]
