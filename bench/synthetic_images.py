"""A synthetic image dataset of any size, written to disk for the memory and throughput benchmarks.

    python bench/synthetic_images.py --num_images 80000 --output_dir /tmp/synthetic-80k [--image_size 64]

A `save_to_disk` DatasetDict with a `train` split of NUM_IMAGES and a `test` split of NUM_TEST_IMAGES RGB PNGs
(a bright rectangle on a noisy background, so the PNGs do not compress to nothing) and 10 labels. Written through
`Dataset.from_generator`, so writing 80,000 images needs no more memory than writing 1,000.
"""

import argparse
import io
import shutil
from pathlib import Path

import datasets
import numpy as np
import PIL.Image


def synthetic_images(num_images: int, image_size: int, seed: int):
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        array = rng.integers(0, 64, (image_size, image_size, 3), dtype=np.uint8)
        top, left = rng.integers(0, image_size // 2, 2)
        height, width = rng.integers(image_size // 4, image_size // 2, 2)
        array[top : top + height, left : left + width] = rng.integers(128, 256, 3, dtype=np.uint8)
        buffer = io.BytesIO()
        PIL.Image.fromarray(array).save(buffer, format="PNG")
        yield {"image": {"bytes": buffer.getvalue(), "path": None}, "label": index % 10}


def write_synthetic_dataset(output_dir: str | Path, num_images: int, num_test_images: int = 500, image_size: int = 64):
    """Write the dataset (replacing OUTPUT_DIR) and return its raw pixel bytes per image (H·W·3)."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    splits = {}
    for split, count, seed in (("train", num_images, 0), ("test", num_test_images, 1)):
        splits[split] = datasets.Dataset.from_generator(
            synthetic_images,
            features=features,
            gen_kwargs={"num_images": count, "image_size": image_size, "seed": seed},
            keep_in_memory=False,
            split=datasets.NamedSplit(split),
        )
    output_dir = Path(output_dir)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    datasets.DatasetDict(splits).save_to_disk(str(output_dir))
    return image_size * image_size * 3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, required=True)
    parser.add_argument("--num_test_images", type=int, default=500)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args()
    pixel_bytes = write_synthetic_dataset(args.output_dir, args.num_images, args.num_test_images, args.image_size)
    print(
        f"Wrote {args.num_images} + {args.num_test_images} images of {args.image_size} px RGB to {args.output_dir} "
        f"({args.num_images * pixel_bytes / 2**20:.0f} MiB of raw training pixels)."
    )


if __name__ == "__main__":
    main()
