#!/usr/bin/env python
"""Train the LARP VQ-VAE image tokenizer with Accelerate.

    accelerate launch recipes/train_vqvae.py --config recipes/configs/vqvae_fashion_mnist_quick.yaml
    python recipes/train_vqvae.py --config recipes/configs/vqvae_fashion_mnist_quick.yaml --max_steps 100

Every flag can also be set in the YAML config (same name); flags given on the command line win. The YAML's `model`
mapping holds `LarpVQVAEConfig` fields, and `--model.FIELD VALUE` overrides one of them.

Writes to OUTPUT_DIR: the model and image processor (`save_pretrained` format), `training_data.json` (the dataset it
was trained on: source, split, columns, class names, image size and channels; encode_dataset.py, train_prior.py,
train_classifier.py and `larp-hf evaluate` default to it), `metrics.json` (final validation at
the top level, the history under `history`), `reconstructions.png` (originals over reconstructions) and
`checkpoints/checkpoint-STEP` folders for `--resume_from_checkpoint`.
"""

import argparse
import itertools
import math
from functools import partial
from pathlib import Path

import datasets
import torch
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

from larp_hf import LarpImageProcessor, LarpVQVAEConfig, LarpVQVAEModel
from larp_hf.pipelines.image_grid import to_pil_images
from larp_hf.data import (
    InMemoryPixels,
    PreprocessedImages,
    StreamedImages,
    DatasetRecord,
    first_image_size,
    load_image_dataset,
    pixels_dataset,
    preprocess_images,
    random_horizontal_flip,
)
from larp_hf import training


# --pixels_in_memory auto holds splits of up to this many bytes of uint8 pixels in memory (Fashion-MNIST's 70,000
# 32×32 grey images take 72 MB): below it, the in-memory tensor is faster (bench/bench_vqvae_dataloading.py).
IN_MEMORY_BYTES = 256 * 2**20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=training.DefaultsHelpFormatter)
    training.add_run_arguments(parser, output_dir="outputs/vqvae", eval_batch_size=512, learning_rate=2e-3)
    training.add_step_arguments(parser, train_batch_size=128, lr_warmup_steps=50)
    training.add_split_arguments(parser)
    parser.add_argument(
        "--dataset", type=str, default="fashion_mnist",
        help="'fashion_mnist', a folder (of images, or written by save_to_disk), a parquet/CSV file or a Hub id. "
        "Recorded in OUTPUT_DIR/training_data.json, which the next recipes default to.",
    )  # fmt: skip
    parser.add_argument("--dataset_dir", type=str, default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--image_column", type=str, default=None, help="Column of the images (default: found).")
    parser.add_argument("--label_column", type=str, default=None, help="Column of the labels (default: found).")
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.99)
    parser.add_argument("--weight_decay", type=training.non_negative_float, default=0.0)
    parser.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=True, help="Horizontal flips.")
    parser.add_argument(
        "--pad_to_size", action=argparse.BooleanOptionalAction, default=False,
        help="Pad the images, centred, to the model's image_size instead of resizing them (lossless when they are "
        "smaller, e.g. 28×28 Fashion-MNIST in 32×32; larger ones are shrunk to fit first). The tokenizer's image "
        "processor then returns images at the dataset's own size, and PSNR is measured on those pixels.",
    )  # fmt: skip
    parser.add_argument("--pad_value", type=float, default=0.0, help="--pad_to_size: border value on the 0–255 scale.")
    parser.add_argument(
        "--resolution", type=training.positive_int, default=None,
        help="Side of the model's square input, short for --model.image_size: images are resized to it (stretched "
        "if they are not square, unless --center_crop or --pad_to_size).",
    )  # fmt: skip
    parser.add_argument(
        "--center_crop", action=argparse.BooleanOptionalAction, default=False,
        help="Crop each image to its centred square before resizing, as diffusers' examples do; the tokenizer's "
        "image processor keeps doing it, for encoding and evaluation.",
    )  # fmt: skip
    parser.add_argument(
        "--pixels_in_memory", type=str, default="auto", choices=["auto", "always", "never"],
        help="Preprocess the splits once and hold their pixels in memory: 'auto' when they take at most "
        f"{IN_MEMORY_BYTES // 2**20} MiB; otherwise each batch is read from the dataset when it is needed.",
    )  # fmt: skip
    parser.add_argument(
        "--streaming", action="store_true",
        help="Read --dataset as a stream (datasets' IterableDataset): a Hub dataset is neither downloaded nor converted "
        "first. Needs a --validation_split in the data, and --max_train_samples where the stream does not say its size.",
    )  # fmt: skip
    parser.add_argument(
        "--shuffle_buffer", type=training.positive_int, default=1000, help="--streaming: rows in the shuffle buffer."
    )
    parser.add_argument(
        "--num_grid_images", type=training.positive_int, default=32, help="Images in reconstructions.png."
    )

    args = training.parse_args_with_config(parser, argv, LarpVQVAEConfig)  # resuming: the checkpoint's model settings

    # Sanity checks (counts and rates are checked by their types).
    if args.resolution is not None:
        if args.model.get("image_size", args.resolution) != args.resolution:
            parser.error(f"--resolution {args.resolution} and model.image_size {args.model['image_size']} differ; give one.")
        args.model["image_size"] = args.resolution
    if args.center_crop and args.pad_to_size:
        parser.error("--center_crop crops images to a square and --pad_to_size pads them to one; choose one.")
    if args.streaming and args.pixels_in_memory == "always":
        parser.error("--streaming reads the images as they are needed; drop --pixels_in_memory always (or --streaming).")
    training.check_run_arguments(parser, args, inputs=inputs_of(args))
    return args


def inputs_of(args) -> dict[str, str | None]:
    """What the run reads, by flag: OUTPUT_DIR must be none of them, hold none and lie inside none."""
    return {"--dataset": args.dataset, "--dataset_dir": args.dataset_dir}


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1]."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


@torch.no_grad()
def evaluate(model, dataloader, accelerator, codebook_size: int, image_processor) -> dict:
    """
    MSE and PSNR on the [0, 1] pixel scale, codebook usage and perplexity over the whole validation split. With
    padded images (--pad_to_size) the error is measured on the image's own pixels, not on the border.
    """
    model.eval()
    squared_error, num_pixels = 0.0, 0
    histogram = torch.zeros(codebook_size, dtype=torch.long, device=accelerator.device)
    for batch in dataloader:
        pixel_values = batch["pixel_values"]
        output = model(pixel_values)
        reconstruction = image_processor.crop_padding(output.reconstruction.float().clamp(-1, 1))
        original = image_processor.crop_padding(pixel_values.float())
        # Normalised [-1, 1] -> [0, 1], the scale PSNR is quoted on.
        errors = ((reconstruction - original) / 2).pow(2).flatten(1).sum(1)
        errors, codes = accelerator.gather_for_metrics((errors, output.codes))
        squared_error += errors.sum().item()
        num_pixels += errors.numel() * original[0].numel()
        histogram += torch.bincount(codes.flatten(), minlength=codebook_size)
    model.train()
    mse = squared_error / max(num_pixels, 1)
    probs = histogram.float() / histogram.sum().clamp(min=1)
    return {
        "val_mse": mse,
        "val_psnr": psnr_from_mse(mse),
        "codebook_usage": (histogram > 0).float().mean().item(),
        "perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()).item(),
    }


@torch.no_grad()
def reconstruction_grid(model, image_processor, pixel_values: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """(3 or 1, H', W') in [0, 1]: each row of originals directly above the row of their reconstructions."""
    was_training = model.training
    model.eval()
    reconstruction = model.decode(model.encode(pixel_values)).float()
    model.train(was_training)
    originals = image_processor.postprocess(pixel_values, output_type="pt").cpu()  # (N, C, H, W) in [0, 1]
    decoded = image_processor.postprocess(reconstruction, output_type="pt").cpu()
    rows = []
    for start in range(0, len(originals), nrow):
        rows += [originals[start : start + nrow], decoded[start : start + nrow]]
    nrow = min(nrow, len(originals))
    padded_rows = [torch.cat([row, torch.ones(nrow - len(row), *row.shape[1:])]) for row in rows]
    return make_grid(torch.cat(padded_rows), nrow=nrow, padding=2, pad_value=1.0)


def save_reconstruction_grid(model, image_processor, pixel_values: torch.Tensor, path: Path, nrow: int = 8):
    """A PNG where each row of originals sits directly above the row of their reconstructions."""
    save_image(reconstruction_grid(model, image_processor, pixel_values, nrow), path)


def grid_examples(val_dataset, count: int, streaming: bool) -> list:
    """The first `count` validation examples: those of reconstructions.png and of the trackers' grids."""
    if streaming:
        return list(itertools.islice(val_dataset, count))
    return [val_dataset[i] for i in range(min(count, len(val_dataset)))]


def pixels_in_memory(choice: str, num_images: int, image_processor) -> bool:
    """--pixels_in_memory: `always`, `never`, or `auto`: when the splits' uint8 pixels take at most IN_MEMORY_BYTES."""
    if choice == "auto":
        size = image_processor.size
        return num_images * image_processor.num_channels * size["height"] * size["width"] <= IN_MEMORY_BYTES
    return choice == "always"


def select_streams(streams, args) -> tuple[datasets.IterableDataset, int, datasets.IterableDataset]:
    """--streaming: the training stream, the images an epoch takes, and the validation stream."""
    if isinstance(streams, datasets.IterableDataset):
        streams = {"train": streams}
    for flag, split in (("--train_split", args.train_split), ("--validation_split", args.validation_split)):
        if split not in streams:
            raise ValueError(
                f"There is no {flag} {split!r}; the splits are {sorted(streams)}. With --streaming the validation "
                "images must be a split of their own (a stream cannot hold out a random draw)."
            )
    train, validation = streams[args.train_split], streams[args.validation_split]
    splits = train.info.splits or {}
    num_examples = splits[args.train_split].num_examples if args.train_split in splits else None
    if args.max_train_samples is not None:
        train = train.take(args.max_train_samples)
        num_examples = min(num_examples or args.max_train_samples, args.max_train_samples)
    if not num_examples:
        raise ValueError(
            f"The stream does not say how many images its {args.train_split!r} split holds: pass --max_train_samples, "
            "the images an epoch takes."
        )
    if args.max_validation_samples is not None:
        validation = validation.take(args.max_validation_samples)
    # Decoded in the collate function, so that each process decodes only the images of its share.
    undecoded = datasets.Image(decode=False)
    return train.cast_column("image", undecoded), num_examples, validation.cast_column("image", undecoded)


def collate(examples, image_processor):
    if "image" in examples[0]:  # rows of a stream: encoded images
        images = [datasets.Image().decode_example(example["image"]) for example in examples]
        pixels = preprocess_images(images, image_processor, normalize=False)["pixels"]
    else:
        pixels = torch.stack([example["pixels"] for example in examples])  # (B, C, H, W) uint8, at the model's size
    return {"pixel_values": image_processor(pixels, do_resize=False, return_tensors="pt")["pixel_values"]}


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)

    # Accelerator (mixed precision, gradient accumulation, trackers) and the claim on OUTPUT_DIR, one run per folder.
    accelerator = training.start_run(args, inputs=inputs_of(args))

    # Model and image processor.
    model_config = LarpVQVAEConfig(**args.model)
    model = LarpVQVAEModel(model_config)
    accelerator.print(
        f"LarpVQVAEModel: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"{model_config.image_size}×{model_config.image_size}×{model_config.in_channels} -> "
        f"{model_config.grid_size}×{model_config.grid_size} codes from {model_config.codebook_size}; "
        f"{accelerator.num_processes} process(es) on {accelerator.device.type}"
    )

    # Data: each batch is read from the memory-mapped dataset, decoded and resized to uint8 pixels in the DataLoader
    # workers, and normalised per batch, so memory follows the batch size, not the dataset. Small splits are
    # preprocessed once (cached by datasets) and held as one uint8 tensor instead, which is faster for them
    # (--pixels_in_memory; bench/bench_vqvae_dataloading.py). With --streaming the rows come from a stream: epochs of
    # a fixed number of batches in an order fixed by the seed and the epoch (StreamedImages), so resuming is exact.
    accelerator.print(f"Dataset: {args.dataset}")
    with accelerator.main_process_first():
        images = load_image_dataset(
            args.dataset, data_dir=args.dataset_dir, streaming=args.streaming, image_column=args.image_column,
            label_column=args.label_column,
        )  # fmt: skip
        if args.streaming:
            train_images, num_train_images, val_images = select_streams(images, args)
        else:
            train_images, val_images = training.select_splits(images, args)
    # What the tokenizer is trained on, kept beside its weights: the recipes that follow default to it.
    dataset_record = DatasetRecord.from_dataset(
        args.dataset, train_images, split=args.train_split, image_column=args.image_column,
        label_column=args.label_column, data_dir=args.dataset_dir,
    )  # fmt: skip
    image_processor = LarpImageProcessor.from_vqvae_config(model_config, do_center_crop=args.center_crop)
    height, width = first_image_size(train_images)
    if height != width and not (args.center_crop or args.pad_to_size):
        accelerator.print(
            f"The images are {height}×{width}: stretched to {model_config.image_size}×{model_config.image_size} "
            "(--center_crop crops them to a square first, --pad_to_size pads them to one)."
        )
    if args.pad_to_size:
        # Padded, not resized: the tokenizer sees the dataset's pixels as they are, and gives them back cropped.
        native_size = image_processor.native_size_for(*first_image_size(train_images))
        image_processor = LarpImageProcessor.from_vqvae_config(
            model_config, do_pad=True, pad_value=args.pad_value, native_size=native_size
        )
        accelerator.print(
            f"Images padded to {model_config.image_size}×{model_config.image_size}, given back at "
            f"{native_size['height']}×{native_size['width']}"
        )
    if args.streaming:
        # Every process reads the stream and keeps its own share of each step's rows (accelerate's
        # IterableDatasetShard), decoding only those, rather than the main process reading, decoding and broadcasting
        # them all (accelerate's default for streams); the DataLoaders then keep their own random generators, which
        # exact resumption needs.
        accelerator.dataloader_config.dispatch_batches = False
        rows_per_step = args.train_batch_size * accelerator.num_processes
        train_dataset = StreamedImages(train_images, num_train_images, rows_per_step, args.seed, args.shuffle_buffer)
        val_dataset = StreamedImages(val_images)
        accelerator.print(f"{num_train_images} training images an epoch, streamed")
    elif pixels_in_memory(args.pixels_in_memory, len(train_images) + len(val_images), image_processor):
        with accelerator.main_process_first():
            train_dataset = InMemoryPixels(pixels_dataset(train_images, image_processor))
            val_dataset = InMemoryPixels(pixels_dataset(val_images, image_processor))
        accelerator.print(f"{len(train_dataset)} training and {len(val_dataset)} validation images, held in memory")
    else:
        train_dataset = PreprocessedImages(train_images, image_processor, normalize=False)
        val_dataset = PreprocessedImages(val_images, image_processor, normalize=False)
        accelerator.print(
            f"{len(train_dataset)} training and {len(val_dataset)} validation images, read a batch at a time"
        )
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=not args.streaming,  # StreamedImages shuffles the stream itself
        drop_last=len(train_dataset) >= args.train_batch_size * accelerator.num_processes,
        collate_fn=partial(collate, image_processor=image_processor),
        num_workers=args.dataloader_num_workers,
        # Its own generator: a new iterator (as after a resume) must not draw from the global RNG that
        # save_state/load_state restores, or the flips and codebook restarts that follow would differ.
        # For the same reason the flips are drawn in the loop, not here: accelerate prefetches a batch ahead.
        generator=torch.Generator().manual_seed(args.seed),
    )
    val_dataloader = torch.utils.data.DataLoader(
        val_dataset,
        batch_size=args.eval_batch_size,
        collate_fn=partial(collate, image_processor=image_processor),
        num_workers=args.dataloader_num_workers,
    )

    # Optimizer and schedule: AdamW, warmup then the chosen decay, counted in optimizer steps.
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
    )
    lr_scheduler = training.get_lr_scheduler(
        accelerator, args.lr_scheduler, optimizer, args.lr_warmup_steps, args.max_steps
    )
    model, optimizer, train_dataloader, val_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, val_dataloader, lr_scheduler
    )
    accelerator.init_trackers("train_vqvae", config=training.tracker_config(args))
    # --report_to: the trackers get the reconstructions of the same validation images at every validation.
    tracker_pixels = None
    if training.trackers_take_images(accelerator):
        tracker_examples = grid_examples(val_dataset, args.num_grid_images, args.streaming)
        tracker_pixels = collate(tracker_examples, image_processor)["pixel_values"].to(accelerator.device)

    # Resume: restores weights, codebook, optimizer, schedule, RNG states, the step count and the history.
    state = training.resume_or_start_afresh(
        accelerator, args.resume_from_checkpoint, output_dir, config=training.run_config(args),
        resume_from_other_run=args.resume_from_other_run,
    )  # fmt: skip

    # Training loop: train_batches picks up at the epoch and batch where a resumed run stopped.
    progress = tqdm(
        total=args.max_steps, initial=state.step, desc="Training", disable=not accelerator.is_local_main_process
    )
    model.train()
    state.start_clock()
    for batch in training.train_batches(accelerator, train_dataloader, state, args.max_steps):
        pixel_values = batch["pixel_values"]
        if args.random_flip:
            pixel_values = random_horizontal_flip(pixel_values)
        with accelerator.accumulate(model):
            output = model(pixel_values)
            training.backward_and_step(accelerator, output.loss, model, optimizer, lr_scheduler, args.max_grad_norm)
        if not accelerator.sync_gradients:
            continue  # still accumulating gradients
        state.count_step()
        logs = {
            "train_loss": output.loss.item(),
            "train_reconstruction_loss": output.reconstruction_loss.item(),
            "train_perplexity": output.perplexity.item(),
            "lr": lr_scheduler.get_last_lr()[0],
        }
        progress.update(1)
        progress.set_postfix(loss=f"{logs['train_loss']:.4f}", ppl=f"{logs['train_perplexity']:.0f}")
        accelerator.log(logs, step=state.step)

        if training.is_due(state.step, args.validation_steps, args.max_steps):
            with training.preserve_random_state():  # validating or not, training draws the same random numbers
                metrics = evaluate(model, val_dataloader, accelerator, model_config.codebook_size, image_processor)
            latest = training.record_validation(accelerator, state, metrics, output_dir)
            if tracker_pixels is not None:
                grid = reconstruction_grid(accelerator.unwrap_model(model), image_processor, tracker_pixels)
                training.log_image(accelerator, "val_reconstructions", to_pil_images(grid[None])[0], state.step)
            if accelerator.is_main_process:
                progress.write(
                    f"step {state.step}: val PSNR {latest['val_psnr']:.2f} dB, codebook usage "
                    f"{latest['codebook_usage']:.1%}, perplexity {latest['perplexity']:.0f}"
                )
        if training.is_due(state.step, args.checkpointing_steps, args.max_steps):
            training.save_checkpoint(accelerator, output_dir, state.step, args.checkpoints_total_limit)
    progress.close()

    # Final model in save_pretrained format, the metrics and the reconstruction grid.
    unwrapped = training.save_final_model(accelerator, model, output_dir, image_processor)
    if accelerator.is_main_process:
        final = training.write_final_metrics(
            output_dir, state, num_parameters=unwrapped.num_parameters(), dataset=args.dataset
        )
        dataset_record.save(output_dir)
        grid_batch = collate(grid_examples(val_dataset, args.num_grid_images, args.streaming), image_processor)
        grid_path = output_dir / "reconstructions.png"
        save_reconstruction_grid(unwrapped, image_processor, grid_batch["pixel_values"].to(accelerator.device), grid_path)
        accelerator.print(
            f"Saved the tokenizer to {output_dir}: val PSNR {final.get('val_psnr', float('nan')):.2f} dB, codebook usage "
            f"{final.get('codebook_usage', float('nan')):.1%}, {final['train_seconds']:.0f} s of training."
        )
    accelerator.end_training()


if __name__ == "__main__":
    from larp_hf.errors import TRAINING_INTERRUPTED, run_script  # one error policy: a traceback only with --debug

    run_script(main, interrupted=TRAINING_INTERRUPTED)
