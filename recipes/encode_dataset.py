#!/usr/bin/env python
"""Encode an image dataset into a token dataset with an image tokenizer, on one process or many.

    python recipes/encode_dataset.py --vqvae outputs/vqvae-fashion-mnist-quick --dataset fashion_mnist \
        --output_dir outputs/tokens-fashion-mnist-quick [--no_flip_augment] [--num_proc 4] [--push_to_hub you/name]
    accelerate launch recipes/encode_dataset.py --vqvae ... --output_dir ...      # one process per device
    torchrun --nproc_per_node 2 recipes/encode_dataset.py --vqvae ... --output_dir ...

--vqvae is any folder (or Hub id) `larp_hf.load_tokenizer` recognises: a LarpVQVAEModel, a folder saved by diffusers'
`VQModel.save_pretrained` or transformers' `JanusVQVAE` / `Emu3VQVAE.save_pretrained`, a `larp-hf convert-tokenizer`
folder. A LarpVQVAEModel folder's own image processor is used; for another tokenizer the images are resized to its
image size, converted to its channels and rescaled to its value range (`LarpImageProcessor.from_tokenizer`).

--dataset defaults to the dataset the tokenizer was trained on (the `training_data.json` train_vqvae.py writes beside
it), with its columns; Fashion-MNIST only when the tokenizer records none. The run prints which and why.

Writes a `DatasetDict` with the source's splits (`save_to_disk`), columns `input_ids`, `input_ids_flipped` (unless
--no_flip_augment) and `label` where the source has one; the images' record (source, columns, class names, image size)
is in the metadata, as `dataset`. Every process encodes its own contiguous part of each split
on its own device while --num_proc DataLoader workers per process decode and resize the images; the result is the
same, row for row, as one process makes. Encoding is cached by `datasets`: running it again with the same tokenizer
and data reads the cache. The token dataset is written beside OUTPUT_DIR and swapped in by renames, so a run that
fails leaves a token dataset that was there whole.
"""

import argparse
import time
from pathlib import Path

import datasets
from accelerate import Accelerator
from transformers import AutoImageProcessor

from larp_hf import LarpImageProcessor, load_tokenizer  # importing larp_hf registers the tokenizer's processor
from larp_hf.flags import DefaultsHelpFormatter
from larp_hf.atomic_files import remove_swap_leftovers, swap_folder, write_json_atomic
from larp_hf.data import DatasetRecord, encode_dataset, load_image_dataset, token_dataset_metadata
from larp_hf.prior import layout_grid
from larp_hf.training import non_negative_int, output_overlap, positive_int, take_recorded_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=DefaultsHelpFormatter)
    parser.add_argument(
        "--vqvae", required=True,
        help="Folder or Hub id of an image tokenizer (a LarpVQVAEModel, a VQModel / JanusVQVAE / Emu3VQVAE folder, ...).",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", default=None,
        help="'fashion_mnist', a folder (of images, or written by save_to_disk), a parquet/CSV file or a Hub id. "
        "Default: the dataset the tokenizer was trained on (its training_data.json); Fashion-MNIST when it records none.",
    )  # fmt: skip
    parser.add_argument("--image_column", default=None, help="Column of the images (default: recorded, else found).")
    parser.add_argument("--label_column", default=None, help="Column of the labels (default: recorded, else found).")
    parser.add_argument("--dataset_dir", default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--output_dir", required=True, help="Where the token DatasetDict is saved.")
    parser.add_argument("--no_flip_augment", action="store_true", help="Do not store the codes of mirrored images.")
    parser.add_argument("--batch_size", type=positive_int, default=256)
    parser.add_argument(
        "--num_proc", type=non_negative_int, default=0,
        help="Processes (DataLoader workers) that decode and resize images for each encoding process (0: it does).",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="Default: the process's own device (accelerate's choice).")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO_ID", help="Also upload it to this dataset repo.")
    args = parser.parse_args(argv)
    # The tokenizer's record decides the default --dataset (and its columns), before any check that reads it.
    take_recorded_dataset(args, args.vqvae)
    output_dir = Path(args.output_dir)
    # Replacing the token dataset would delete a tokenizer or images it reads (or write into them).
    inputs = {"--vqvae": args.vqvae, "--dataset": args.dataset, "--dataset_dir": args.dataset_dir}
    refusal = output_overlap(output_dir, inputs)
    if refusal:
        parser.error(refusal)
    # A token dataset written here before is replaced (it comes back from the cache in seconds); anything else is kept.
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / "larp_token_dataset.json").exists():
        parser.error(f"{output_dir} is not empty and holds no token dataset; pick another --output_dir.")
    return args


def save_token_dataset(encoded: datasets.DatasetDict, summary: dict, output_dir: Path):
    """save_to_disk beside OUTPUT_DIR, then swap it in by renames: a failed write never leaves half a token dataset."""
    remove_swap_leftovers(output_dir)  # of a run that was killed
    with swap_folder(output_dir) as partial:
        encoded.save_to_disk(str(partial))
        write_json_atomic(partial / "larp_token_dataset.json", summary)


def main(argv=None):
    args = parse_args(argv)
    # One process, or one per device under accelerate launch / torchrun (the Accelerator reads which).
    state = Accelerator()
    vqvae = load_tokenizer(args.vqvae).to(args.device or state.device).eval()
    try:
        image_processor = AutoImageProcessor.from_pretrained(args.vqvae, trust_remote_code=False)
    except OSError:
        image_processor = None
    if not isinstance(image_processor, LarpImageProcessor):
        # A library folder has no processor of ours (or another library's, which makes other tensors): make the
        # images what the tokenizer reads from its image size, channels and value range.
        image_processor = LarpImageProcessor.from_tokenizer(vqvae)
        state.print(
            f"{args.vqvae} has no LarpImageProcessor: resizing to {vqvae.image_size}, {vqvae.num_channels} channel(s), "
            f"values in {vqvae.value_range}."
        )
    state.print(f"Dataset: {args.dataset} ({args.dataset_reason})")
    with state.main_process_first():  # the first load of a source may write the datasets cache
        source = load_image_dataset(
            args.dataset, data_dir=args.dataset_dir, image_column=args.image_column, label_column=args.label_column
        )
    if isinstance(source, datasets.Dataset):
        source = datasets.DatasetDict({"train": source})
    # Where the images came from travels in the token dataset's metadata (and from there into the prior).
    first_split = next(iter(source.values()))
    dataset_record = DatasetRecord.from_dataset(
        args.dataset, first_split, image_column=args.image_column, label_column=args.label_column,
        data_dir=args.dataset_dir,
    )  # fmt: skip

    # Every process encodes its part of each split and gets the whole split back (larp_hf.data.encode_dataset).
    start = time.perf_counter()
    encoded = datasets.DatasetDict(
        {
            split: encode_dataset(
                vqvae,
                dataset,
                image_processor,
                batch_size=args.batch_size,
                flip_augment=not args.no_flip_augment,
                num_proc=args.num_proc,
                dataset_record=dataset_record,
            )
            for split, dataset in source.items()
        }
    )
    seconds = time.perf_counter() - start

    if state.is_main_process:
        metadata = token_dataset_metadata(next(iter(encoded.values())))
        height, width = layout_grid(metadata)
        summary = {
            **metadata,
            "vqvae": args.vqvae,
            "dataset": args.dataset,
            "splits": {split: len(dataset) for split, dataset in encoded.items()},
            "encode_seconds": round(seconds, 1),
            "num_processes": state.num_processes,
        }
        save_token_dataset(encoded, summary, Path(args.output_dir))
        if args.push_to_hub:
            encoded.push_to_hub(args.push_to_hub)
        print(
            f"Saved {summary['splits']} token sequences of {height}×{width} codes to {args.output_dir} "
            f"({state.num_processes} process(es), {seconds:.1f} s of encoding)."
        )
    state.wait_for_everyone()


if __name__ == "__main__":
    from larp_hf.errors import run_script  # one error policy: a line or two, a traceback only with --debug

    run_script(main)
