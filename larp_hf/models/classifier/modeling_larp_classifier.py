"""`LarpClassifierModel`: a small CNN classifier whose penultimate layer is the feature space of the sample metrics."""

import hashlib

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_larp_classifier import LarpClassifierConfig


class LarpClassifierModel(PreTrainedModel):
    r"""
    Stages of (3×3 conv, BN, ReLU) ×2 + 2× max pooling, global average pooling, a `feature_dim` ReLU layer (the
    features), dropout and a linear classifier. Inputs are `LarpImageProcessor` outputs ((B, C, H, W) in [-1, 1]).

    Example:

    ```python
    >>> import torch
    >>> from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel
    >>> model = LarpClassifierModel(LarpClassifierConfig(image_size=32, feature_dim=64)).eval()
    >>> pixel_values = torch.zeros(2, 1, 32, 32)
    >>> model(pixel_values).logits.shape, model.get_image_features(pixel_values).shape
    (torch.Size([2, 10]), torch.Size([2, 64]))
    ```
    """

    config_class = LarpClassifierConfig
    main_input_name = "pixel_values"

    def __init__(self, config: LarpClassifierConfig):
        super().__init__(config)
        stages, channels = [], config.in_channels
        for width in config.hidden_channels:
            stages += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]  # fmt: skip
            channels = width
        self.backbone = nn.Sequential(*stages)
        self.feature_layer = nn.Sequential(nn.Linear(channels, config.feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.feature_dim, config.num_classes)
        self.post_init()

    def _check_pixel_values(self, pixel_values: torch.Tensor):
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"This feature network takes (batch, {expected[0]}, {expected[1]}, {expected[2]}) images, got "
                f"{tuple(pixel_values.shape)}: it was trained on another image shape. Use a feature network trained "
                "on images like these (recipes/train_classifier.py)."
            )

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, feature_dim) penultimate-layer features."""
        self._check_pixel_values(pixel_values)
        pooled = self.backbone(pixel_values).mean(dim=(2, 3))  # (B, C')
        return self.feature_layer(pooled)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> ImageClassifierOutput:
        features = self.get_image_features(pixel_values)
        logits = self.classifier(self.dropout(features))  # (B, num_classes)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    def weights_sha256(self) -> str:
        """SHA-256 (hex) of every weight and buffer (by name): names the feature network a score was computed with."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
        return digest.hexdigest()


__all__ = ["LarpClassifierModel"]
