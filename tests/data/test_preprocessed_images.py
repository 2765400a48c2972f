"""The images as the networks take them: a split of uint8 pixels held in memory, and the flips that augment them."""

import datasets
import pytest
import torch

from larp_hf import LarpImageProcessor
from larp_hf.data import (
    InMemoryPixels,
    PreprocessedImages,
    load_image_dataset,
    pixels_dataset,
    random_horizontal_flip,
    read_pixels,
)


@pytest.fixture(scope="module")
def train_images(tiny_image_dataset_dir) -> datasets.Dataset:
    return load_image_dataset(tiny_image_dataset_dir, split="train")


def test_a_split_held_in_memory_keeps_its_pixels_uint8_and_its_labels(train_images):
    processor = LarpImageProcessor(num_channels=1, size={"height": 8, "width": 8})
    held = InMemoryPixels(pixels_dataset(train_images, processor))
    # uint8, not the int64 that datasets' torch and numpy formats widen the column to (eight times the memory).
    assert held.pixels.dtype == torch.uint8 and held.pixels.shape == (64, 1, 8, 8)
    assert held.labels.dtype == torch.long and held.labels.tolist() == list(train_images["label"])
    # The same pixels, row for row, as preprocessing a batch at a time gives.
    batch = PreprocessedImages(train_images, processor, normalize=False).__getitems__([0, 5, 63])
    for row, index in zip(batch, [0, 5, 63]):
        assert torch.equal(held[index]["pixels"], row["pixels"]) and held[index]["label"] == row["label"]
    assert len(held) == 64


def test_read_pixels_reads_the_rows_asked_for(train_images):
    pixels = pixels_dataset(train_images, LarpImageProcessor(num_channels=1, size={"height": 8, "width": 8}))
    everything = read_pixels(pixels)
    assert everything.dtype == torch.uint8
    assert torch.equal(read_pixels(pixels, range(3, 7)), everything[3:7])
    assert torch.equal(read_pixels(pixels, [9, 2, 2]), everything[[9, 2, 2]])
    unlabelled = InMemoryPixels(pixels.remove_columns("label"))
    assert unlabelled.labels is None and set(unlabelled[0]) == {"pixels"}


def test_random_horizontal_flip_mirrors_a_seeded_random_part_of_the_batch():
    pixel_values = torch.arange(64 * 2 * 3 * 4, dtype=torch.float32).reshape(64, 2, 3, 4)  # (B, C, H, W)
    torch.manual_seed(0)
    flipped = random_horizontal_flip(pixel_values)
    mirrored = [torch.equal(out, image.flip(-1)) for out, image in zip(flipped, pixel_values)]
    kept = [torch.equal(out, image) for out, image in zip(flipped, pixel_values)]
    assert all(m != k for m, k in zip(mirrored, kept))  # each image mirrored left-right, or left as it was
    assert 16 < sum(mirrored) < 48
    torch.manual_seed(0)
    assert torch.equal(random_horizontal_flip(pixel_values), flipped)  # drawn from the global generator
