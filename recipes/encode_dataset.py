#!/usr/bin/env python
"""Encode an image dataset into a token dataset with a trained LARP tokenizer.

    python recipes/encode_dataset.py --vqvae outputs/vqvae-fashion-mnist-quick --dataset fashion_mnist \
        --output_dir outputs/tokens-fashion-mnist-quick [--no_flip_augment] [--push_to_hub you/name]

Writes a `DatasetDict` with the source's splits (`save_to_disk`), columns `input_ids`, `input_ids_flipped` (unless
--no_flip_augment) and `label` where the source has one. Encoding is cached by `datasets`: running it again with the
same tokenizer and data reads the cache.
"""

import argparse
import json
import time
from pathlib import Path

import datasets
import torch
from transformers import AutoImageProcessor, AutoModel

from larp_hf import LarpImageProcessor  # importing larp_hf registers the tokenizer with the Auto classes
from larp_hf.data import encode_dataset, load_image_dataset, token_dataset_metadata


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqvae", required=True, help="Folder or Hub id of a trained LarpVQVAEModel.")
    parser.add_argument("--dataset", default="fashion_mnist", help="'fashion_mnist', a folder or a Hub id.")
    parser.add_argument("--dataset_dir", default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--output_dir", required=True, help="Where the token DatasetDict is saved.")
    parser.add_argument("--no_flip_augment", action="store_true", help="Do not store the codes of mirrored images.")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO_ID", help="Also upload it to this dataset repo.")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1.")
    output_dir = Path(args.output_dir)
    # A token dataset written here before is replaced (it comes back from the cache in seconds); anything else is kept.
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / "larp_token_dataset.json").exists():
        parser.error(f"{output_dir} is not empty and holds no token dataset; pick another --output_dir.")
    return args


def main(argv=None):
    args = parse_args(argv)
    vqvae = AutoModel.from_pretrained(args.vqvae).to(args.device).eval()
    try:
        image_processor = AutoImageProcessor.from_pretrained(args.vqvae)
    except OSError:
        image_processor = LarpImageProcessor.from_vqvae_config(vqvae.config)
        print(f"{args.vqvae} has no preprocessor_config.json: using the processor its config implies.")
    source = load_image_dataset(args.dataset, data_dir=args.dataset_dir)
    if isinstance(source, datasets.Dataset):
        source = datasets.DatasetDict({"train": source})

    start = time.perf_counter()
    encoded = datasets.DatasetDict(
        {
            split: encode_dataset(
                vqvae, dataset, image_processor, batch_size=args.batch_size, flip_augment=not args.no_flip_augment
            )
            for split, dataset in source.items()
        }
    )
    seconds = time.perf_counter() - start
    encoded.save_to_disk(args.output_dir)
    metadata = token_dataset_metadata(next(iter(encoded.values())))
    summary = {
        **metadata,
        "vqvae": args.vqvae,
        "dataset": args.dataset,
        "splits": {split: len(dataset) for split, dataset in encoded.items()},
        "encode_seconds": round(seconds, 1),
    }
    (Path(args.output_dir) / "larp_token_dataset.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.push_to_hub:
        encoded.push_to_hub(args.push_to_hub)
    print(f"Saved {summary['splits']} token sequences of {metadata['grid_size'] ** 2} codes to {args.output_dir}.")


if __name__ == "__main__":
    main()
