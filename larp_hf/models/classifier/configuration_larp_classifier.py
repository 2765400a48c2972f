"""Configuration of the small image classifier whose features the sample-quality metrics are computed on."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class LarpClassifierConfig(PreTrainedConfig):
    r"""
    Configuration of `LarpClassifierModel`, a small CNN trained on labelled images of the generated domain (e.g.
    Fashion-MNIST) so FID and precision/recall can be computed offline, on features that know the domain.

    Args:
        in_channels (`int`, *optional*, defaults to 1): image channels.
        image_size (`int`, *optional*, defaults to 32): side of the square input, in pixels.
        num_classes (`int`, *optional*, defaults to 10): classes.
        hidden_channels (`list[int]`, *optional*, defaults to `[32, 64, 128]`): channels of each stage (two 3×3
            convolutions, batch norm, ReLU, then 2× max pooling).
        feature_dim (`int`, *optional*, defaults to 128): width of the penultimate layer, the features the metrics use.
        classifier_dropout (`float`, *optional*, defaults to 0.3): dropout before the final linear layer.

    Example:

    ```python
    >>> from larp_hf.models.classifier import LarpClassifierConfig
    >>> LarpClassifierConfig(feature_dim=64).feature_dim
    64
    ```
    """

    model_type = "larp_classifier"

    in_channels: int = 1
    image_size: int = 32
    num_classes: int = 10
    hidden_channels: list[int] | tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128
    classifier_dropout: float | int = 0.3

    def __post_init__(self, **kwargs):
        self.hidden_channels = list(self.hidden_channels)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        if self.image_size % (2 ** len(self.hidden_channels)) != 0:
            raise ValueError(
                f"`image_size`={self.image_size} must be divisible by 2**len(hidden_channels) = "
                f"{2 ** len(self.hidden_channels)}."
            )


__all__ = ["LarpClassifierConfig"]
