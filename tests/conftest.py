import os

# Tests never touch the network: everything they load is made here or shipped by Debian.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402


def make_images(num_images: int, size: int = 16, channels: int = 1, seed: int = 0) -> list[PIL.Image.Image]:
    """Blobby images with structure a tiny VQ-VAE can learn: a bright rectangle on a dark background."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        array = np.full((size, size, channels), 20, dtype=np.uint8)
        top, left = rng.integers(0, size // 2, 2)
        height, width = rng.integers(size // 4, size // 2, 2)
        array[top : top + height, left : left + width] = rng.integers(128, 256, channels)
        images.append(PIL.Image.fromarray(array[..., 0] if channels == 1 else array))
    return images


@pytest.fixture(scope="session")
def tiny_image_dataset_dir(tmp_path_factory) -> str:
    """A save_to_disk DatasetDict with `train` (64) and `test` (16) splits of 16×16 grey images and 2 labels."""
    folder = tmp_path_factory.mktemp("tiny_images")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    splits = {}
    for split, count, seed in (("train", 64, 0), ("test", 16, 1)):
        images = make_images(count, seed=seed)
        splits[split] = datasets.Dataset.from_dict(
            {"image": images, "label": [i % 2 for i in range(count)]}, features=features
        )
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return str(folder)


def make_tiny_pipeline(num_classes: int = 0, codebook_size: int = 32, seed: int = 0, **prior_overrides):
    """An untrained 16×16 grey pipeline: a 2×-downsampling tokenizer (8×8 grid) and a `tiny` GPT-2 prior."""
    import torch
    from transformers import GPT2LMHeadModel

    from larp_hf import LarpPipeline, LarpVQVAEConfig, LarpVQVAEModel, prior_config

    torch.manual_seed(seed)
    vqvae = LarpVQVAEModel(
        LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[16], stem_channels=8, codebook_size=codebook_size)
    )
    config = prior_config(
        vqvae.config, preset="tiny", num_classes=num_classes, tokenizer_hash=vqvae.tokenizer_hash(), **prior_overrides
    )
    return LarpPipeline(vqvae, GPT2LMHeadModel(config))


@pytest.fixture
def tiny_pipeline():
    return make_tiny_pipeline()
