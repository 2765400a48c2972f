"""Feature networks: the spaces the sample metrics are computed in (a domain classifier, Inception-v3, or a fixed
random network for unlabelled data offline)."""

import hashlib
import json
import logging
import os
from pathlib import Path
from unittest import mock

import torch
from safetensors.torch import load_file
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
    The field's FID feature space: Inception-v3's 2048 pool3 features, computed by torch-fidelity's
    `FeatureExtractorInceptionV3` (the TF-1.x-compatible network, weights converted from the 2015-12-05 TensorFlow
    graph, and the TF-1.x bilinear resize to 299×299 that the original TTUR FID code applies). Our features are that
    module's own output (tested equal on a random instance of it); with `larp_hf.metrics.frechet_distance` the score is
    torch-fidelity's FID (`fid_statistics_to_metric`) on the same features. torchmetrics' `FrechetInceptionDistance`
    gives the same features only with `antialias=False`: its default antialiased resize is another protocol.
    Grey images are repeated to RGB; images are quantised to uint8 first, as saved PNGs are.

    Needs `pip install torch-fidelity` (`pip install larp_hf[inception]`). The weights: `weights_path` (torch-fidelity's
    `WEIGHTS_FILE`, a `.pth` of plain tensors, or the same tensors as `.safetensors`), else that file in torch's hub
    cache (`torch.hub.get_dir()/checkpoints`), else downloaded there from `WEIGHTS_URL` (`download=False`, or
    `HF_HUB_OFFLINE=1`, never tries). The file is read with `torch.load(weights_only=True)` or safetensors: no pickle
    runs (torch-fidelity's own loader would unpickle it).
    """

    WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
    WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
    batch_size = 100  # 299×299 inputs

    def __init__(self, weights_path: str | os.PathLike | None = None, download: bool = True):
        try:
            from torch_fidelity import feature_extractor_inceptionv3
        except ImportError:
            raise ValueError(
                "Inception-v3 features need torch-fidelity (`pip install torch-fidelity`, or `pip install "
                "larp_hf[inception]`); or use a domain classifier from recipes/train_classifier.py, or the offline "
                "`random` feature network."
            ) from None
        state_dict = self.read_weights(self.weights_file(weights_path, download))
        # torch-fidelity reads its weights itself, from the URL or a path, with torch.load(weights_only=False) (a
        # pickle that can run code): its module is built here with the tensors read safely above instead.
        with mock.patch.object(feature_extractor_inceptionv3, "load_state_dict_from_url", lambda *_, **__: state_dict):
            try:
                self.model = feature_extractor_inceptionv3.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
            except RuntimeError as error:  # load_state_dict(strict=True): missing, unexpected or misshaped tensors
                first_line = str(error).splitlines()[1:2] or [str(error)]
                raise ValueError(
                    f"The Inception-v3 weights do not fit torch-fidelity's network ({first_line[0].strip()}): pass "
                    f"torch-fidelity's {self.WEIGHTS_FILE}."
                ) from None
        self.name = "Inception-v3 pool3 features"
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.weights_sha256 = digest.hexdigest()

    @classmethod
    def weights_file(cls, weights_path: str | os.PathLike | None = None, download: bool = True) -> Path:
        """
        The weights file to read: `weights_path`, else `WEIGHTS_FILE` in torch's hub cache, downloaded there first
        when missing (unless `download=False` or `HF_HUB_OFFLINE=1`). A `ValueError` names the file and the fix.
        """
        if weights_path is not None:
            if not Path(weights_path).is_file():
                raise ValueError(
                    f"`weights_path` {weights_path} is not a file. Inception-v3 FID needs torch-fidelity's "
                    f"{cls.WEIGHTS_FILE} ({cls.WEIGHTS_URL}): download it once and pass its path."
                )
            return Path(weights_path)
        cached = Path(torch.hub.get_dir()) / "checkpoints" / cls.WEIGHTS_FILE
        if cached.is_file():
            return cached
        offline = os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")
        fix = (
            f"download {cls.WEIGHTS_URL} on a machine with network access and pass its path (`weights_path`; on the "
            f"command line `--feature-network inception:PATH`) or put it at {cached}; or use features that need no "
            "download (a classifier from recipes/train_classifier.py, or `random`)."
        )
        if not download or offline:
            why = "`download` is off" if not download else "HF_HUB_OFFLINE is set"
            raise ValueError(f"The Inception-v3 weights {cls.WEIGHTS_FILE} are not in {cached.parent} and {why}: {fix}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        logger.info("Downloading the Inception-v3 weights %s to %s", cls.WEIGHTS_URL, cached)
        try:
            torch.hub.download_url_to_file(cls.WEIGHTS_URL, str(cached), progress=True)  # writes a temporary, renames
        except OSError as error:  # URLError, timeouts, a full disk
            raise ValueError(f"The Inception-v3 weights could not be downloaded ({error}): {fix}") from None
        return cached

    @classmethod
    def read_weights(cls, path: Path) -> dict[str, torch.Tensor]:
        """The tensors of a `.safetensors` file, or of a `.pth` read with `torch.load(weights_only=True)`."""
        try:
            weights = load_file(path) if path.suffix == ".safetensors" else torch.load(path, "cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001  (unpickling errors, truncated files, foreign globals)
            # torch's message goes on to suggest weights_only=False, i.e. running the file's code: keep the reason only.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
            raise ValueError(
                f"{path} could not be read as Inception-v3 weights (plain tensors, torch.load(weights_only=True) or "
                f"safetensors; nothing in it is run): {reason} Pass torch-fidelity's {cls.WEIGHTS_FILE}."
            ) from None
        if not isinstance(weights, dict) or not all(isinstance(value, torch.Tensor) for value in weights.values()):
            raise ValueError(f"{path} holds a {type(weights).__name__}, not a state dict: pass {cls.WEIGHTS_FILE}.")
        return weights

    @property
    def feature_dim(self) -> int:
        return 2048

    def check_images(self, channels: int, size: int | tuple[int, int], what: str):
        if channels not in (1, 3):
            raise ValueError(f"Inception-v3 takes grey or RGB images, but {what} have {channels} channels.")

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels  # (B, 3, H, W) uint8
        return self.model(pixels.to(self.device))[0]


class RandomFeatureNetwork(FeatureNetwork):
    """
    An offline feature space that needs no labels and no download: a small convolutional network with fixed random
    weights (He-normal from `seed`, no training), its 64 channels averaged over the image. Randomly initialised
    networks are a known classifier-free embedding for data far from ImageNet (Naeem et al., 2020,
    https://arxiv.org/abs/2002.09797, study them for precision/recall/density/coverage); here it is the fallback for
    unlabelled data without network access.

    Its limits: the features describe local colour, edge and texture statistics (a receptive field of 17 pixels at
    the input size), not what the images show, so a sample set with the right textures but wrong content can score
    well. Numbers are comparable only between runs with the same weights (`weights_sha256`, recorded with the scores)
    and image size, never with published FIDs (Inception-v3) nor with a trained classifier's. 64 features need more
    than 64 images on each side (hundreds for stable numbers), far fewer than Inception's 2048. Grey or RGB images
    (grey repeated to RGB), any size of at least 8×8.
    """

    batch_size = 500
    FEATURE_DIM = 64

    def __init__(self, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        layers, channels = [], 3
        for width, stride in ((32, 1), (64, 2), (64, 2), (self.FEATURE_DIM, 1)):
            conv = torch.nn.Conv2d(channels, width, 3, stride=stride, padding=1)
            with torch.no_grad():  # He init keeps the activations' scale through the ReLUs (no normalisation layers)
                conv.weight.normal_(0.0, (2.0 / (channels * 9)) ** 0.5, generator=generator)
                conv.bias.zero_()
            layers += [conv, torch.nn.ReLU()]
            channels = width
        self.model = torch.nn.Sequential(*layers).eval().requires_grad_(False)
        self.name = f"seed-{seed} random-network features"
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        self.weights_sha256 = digest.hexdigest()

    @property
    def feature_dim(self) -> int:
        return self.FEATURE_DIM

    def check_images(self, channels: int, size: int | tuple[int, int], what: str):
        height, width = (size, size) if isinstance(size, int) else size
        if channels not in (1, 3) or min(height, width) < 8:
            raise ValueError(
                f"The random feature network takes grey or RGB images of at least 8×8, but {what} are "
                f"{channels}×{height}×{width}."
            )

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels  # (B, 3, H, W) uint8
        pixel_values = pixels.to(self.device, torch.float32) / 127.5 - 1
        return self.model(pixel_values).mean(dim=(2, 3))  # (B, 64)


def load_feature_network(spec: str | os.PathLike) -> FeatureNetwork:
    """
    `spec`: `inception` (downloads its weights on first use) or `inception:WEIGHTS` (a local copy of torch-fidelity's
    `weights-inception-2015-12-05-6726825d.pth`) for Inception-v3; `random` or `random:SEED` for the offline,
    label-free `RandomFeatureNetwork`; else a folder from recipes/train_classifier.py.
    """
    spec = str(spec)
    if spec == "inception" or spec.startswith("inception:"):
        network = InceptionFeatureNetwork(spec.partition(":")[2] or None)
    elif spec == "random" or spec.startswith("random:"):
        seed = spec.partition(":")[2] or "0"
        if not seed.isdigit():
            raise ValueError(f"`random:SEED` takes a non-negative integer seed, got {seed!r}.")
        network = RandomFeatureNetwork(int(seed))
    elif (Path(spec) / "config.json").is_file():
        network = FeatureNetwork.from_pretrained(spec)
    else:
        raise ValueError(
            f"No feature network in {spec}. Train one with `accelerate launch recipes/train_classifier.py "
            "--output_dir DIR` (labelled data; Fashion-MNIST: minutes on a CPU), pass `inception[:WEIGHTS.pth]` "
            "(the field's FID), or `random` (offline, no labels; see its limits)."
        )
    logger.info("Feature network: %s (weights SHA-256 %s)", network.name, network.weights_sha256)
    return network


__all__ = [
    "FeatureNetwork",
    "InceptionFeatureNetwork",
    "RandomFeatureNetwork",
    "as_uint8",
    "load_feature_network",
    "to_pixel_values",
]
