#!/usr/bin/env python
"""Train the feature network of the sample metrics: a small CNN classifier on a labelled image dataset.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/train_classifier.py \
        --config recipes/configs/classifier_fashion_mnist.yaml
    python recipes/train_classifier.py --epochs 1 --output_dir /tmp/features

FID and precision/recall need a feature space that knows the domain. Inception-v3 needs downloaded weights and was
trained on ImageNet photos, not 32×32 garments; a classifier trained on the real data works offline and its
penultimate layer separates what matters in this domain. Scores computed on it are reported under its name
("FID (fashion_mnist classifier features)") with its weights' SHA-256.

Every flag can also be set in the YAML config (same name); flags given on the command line win. The YAML's `model`
mapping holds `LarpClassifierConfig` fields and `--model.FIELD VALUE` overrides one of them; --image_size,
--in_channels, --hidden_channels and --feature_dim are short for theirs. `num_classes` comes from the dataset.

--dataset defaults to the dataset --vqvae (a tokenizer or pipeline folder) records, the input channels, size and
padding to the tokenizer's; without --vqvae, Fashion-MNIST, and channels and padding from the images (1 channel for
grey images, 3 for colour; padded when no larger than --image_size). The run prints what it chose.

Writes to OUTPUT_DIR: the classifier and its image processor (`save_pretrained` format), `training_data.json` (the
dataset record), `metrics.json` (test
accuracy per epoch, the final one at the top level, and `weights_sha256`) and `checkpoints/checkpoint-EPOCH` after
every epoch; `--resume_from_checkpoint latest` continues an interrupted run exactly where it stopped (same shuffles,
flips and random state).
"""

import argparse
import math
from functools import partial
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from huggingface_hub.errors import StrictDataclassError
from tqdm.auto import tqdm

from larp_hf import LarpImageProcessor
from larp_hf.data import (
    DatasetRecord,
    InMemoryPixels,
    first_image_size,
    load_image_dataset,
    pixels_dataset,
    random_horizontal_flip,
)
from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel
from larp_hf import training
from larp_hf.flags import list_of


# --epochs by default: at least this many optimizer steps. Four epochs of a few hundred images are a dozen steps, and
# the classifier stays at chance after them (generated 32×32 RGB shapes, 432 images: 33% after 16 steps of 128 at the
# default learning rate, 93% after 64); Fashion-MNIST's four epochs are 1,876 steps.
MIN_DEFAULT_STEPS = 1000
DEFAULT_EPOCHS = 4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=training.DefaultsHelpFormatter)
    training.add_run_arguments(
        parser, output_dir="outputs/features-fashion-mnist", eval_batch_size=512, learning_rate=3e-3
    )
    parser.add_argument(
        "--vqvae", default=None,
        help="The tokenizer (or pipeline) folder whose samples the features will judge: the dataset it records, its "
        "image size, channels and padding become the defaults.",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", default=None,
        help="'fashion_mnist', a folder, a parquet/CSV file or a Hub id, with labels. Default: the dataset --vqvae "
        "records; Fashion-MNIST when none is recorded.",
    )  # fmt: skip
    parser.add_argument("--dataset_dir", default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--image_column", default=None, help="Column of the images (default: recorded, else found).")
    parser.add_argument("--label_column", default=None, help="Column of the labels (default: recorded, else found).")
    parser.add_argument("--train_split", default="train")
    parser.add_argument(
        "--test_split", default="test",
        help="Split the test accuracy is measured on after each epoch; if the dataset lacks it, --test_size examples "
        "of the training split are held out (at most a fifth of it).",
    )  # fmt: skip
    parser.add_argument("--test_size", type=training.positive_int, default=1000, help="See --test_split.")
    parser.add_argument(
        "--max_train_samples", type=training.positive_int, default=None, help="Train on at most this many."
    )
    parser.add_argument("--image_size", type=int, default=None, help="Input side; match the tokenizer's image_size.")
    parser.add_argument(
        "--in_channels", type=int, default=None, choices=(1, 3),
        help="Default: the tokenizer's (--vqvae), else 1 for grey images and 3 for colour ones.",
    )  # fmt: skip
    parser.add_argument(
        "--pad_to_size", action=argparse.BooleanOptionalAction, default=None,
        help="Pad the images, centred, to --image_size instead of resizing them, as the tokenizer's --pad_to_size "
        "does: the network then takes images at the dataset's own size (e.g. 28×28) and pads them itself "
        "(larger ones are shrunk to fit first). --no-pad_to_size resizes them. Default: as the tokenizer "
        "(--vqvae) does; without one, pad images no larger than --image_size and resize larger ones.",
    )  # fmt: skip
    parser.add_argument("--hidden_channels", type=list_of(int), default=None, help="Channels per stage, e.g. 32,64,128.")
    parser.add_argument("--feature_dim", type=int, default=None, help="Width of the features the metrics use.")
    # Counted in epochs: the classifier is tested and checkpointed after each one (checkpoint-EPOCH), its learning
    # rate warmed up over the first quarter-epoch.
    parser.add_argument(
        "--epochs", type=training.positive_int, default=None,
        help=f"Default: 4, or as many as make {MIN_DEFAULT_STEPS} optimizer steps on a small dataset.",
    )  # fmt: skip
    parser.add_argument("--batch_size", type=training.positive_int, default=128, help="Per-process batch size.")
    parser.add_argument("--weight_decay", type=training.non_negative_float, default=5e-4)
    parser.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=True, help="Horizontal flips.")

    # The model flags of the recipe's first version stay as shorthands for --model.FIELD. Resuming, the model
    # settings are the checkpoint's.
    args = training.parse_args_with_config(
        parser, argv, LarpClassifierConfig, model_shorthands=("image_size", "in_channels", "hidden_channels", "feature_dim")
    )

    # Sanity checks (counts and rates are checked by their types).
    if "num_classes" in args.model:
        parser.error("num_classes comes from the dataset's `label` column; drop it from `model:`.")
    # --vqvae's record decides the default --dataset (and its columns), before any check that reads it.
    if args.vqvae:
        tokenizer_processor(args.vqvae)  # refused now, not after loading the data, if it has none
    training.take_recorded_dataset(args, args.vqvae)
    try:
        LarpClassifierConfig(**args.model)
    except (StrictDataclassError, TypeError, ValueError) as error:
        parser.error(f"invalid model configuration: {error}")
    training.check_run_arguments(parser, args, inputs=inputs_of(args))
    return args


def inputs_of(args) -> dict[str, str | None]:
    """What the run reads, by flag: OUTPUT_DIR must be none of them, hold none and lie inside none."""
    return {"--dataset": args.dataset, "--dataset_dir": args.dataset_dir}


def tokenizer_processor(folder: str) -> LarpImageProcessor:
    """The image processor saved with a tokenizer (train_vqvae.py's folder) or a pipeline (its image_processor/)."""
    for candidate in (Path(folder), Path(folder) / "image_processor"):
        if (candidate / "preprocessor_config.json").is_file():
            return LarpImageProcessor.from_pretrained(candidate)
    raise SystemExit(
        f"error: --vqvae {folder} holds no LarpImageProcessor (preprocessor_config.json): pass a train_vqvae.py "
        "folder or a pipeline folder, or drop --vqvae and give --in_channels and --image_size."
    )


def data_defaults(args, train_images) -> list[str]:
    """
    Fill in what was left out from the tokenizer (--vqvae) or the data: channels, image size and padding. Returns
    what was chosen and why, for the log.
    """
    processor, chosen = tokenizer_processor(args.vqvae) if args.vqvae else None, []
    height, width = first_image_size(train_images)
    if "in_channels" not in args.model:
        if processor is not None:
            args.model["in_channels"], why = processor.num_channels, "the tokenizer's"
        else:
            record = DatasetRecord.from_dataset(args.dataset, train_images.select(range(1)))
            args.model["in_channels"] = 1 if record.num_channels in (1, 2) else 3  # grey (with alpha) or colour
            why = f"the images have {record.num_channels}"
        chosen.append(f"{args.model['in_channels']} channel(s) ({why})")
    if "image_size" not in args.model and processor is not None:
        args.model["image_size"] = processor.size["height"]
        chosen.append(f"image size {args.model['image_size']} (the tokenizer's)")
    image_size = args.model.get("image_size", LarpClassifierConfig().image_size)
    if args.pad_to_size is None:
        if processor is not None:
            args.pad_to_size, why = bool(processor.do_pad), "as the tokenizer does"
        else:
            args.pad_to_size = max(height, width) <= image_size
            why = f"{height}×{width} images, {'no larger than' if args.pad_to_size else 'larger than'} {image_size}"
        chosen.append(f"{'padded' if args.pad_to_size else 'resized'} to {image_size}×{image_size} ({why})")
    return chosen


def load_splits(args) -> tuple[InMemoryPixels, InMemoryPixels, LarpImageProcessor, LarpClassifierConfig, DatasetRecord]:
    """
    The training and test splits of --dataset at the model's size (padded to it with --pad_to_size), decoded and
    resized once (cached by datasets) and held in memory as uint8 pixels with their labels; the image processor that
    made them, which normalises them per batch; the model's config, with the defaults the data and tokenizer
    decide and the number of classes of the `label` column; and the record of the training images.
    """
    PartialState().print(f"Dataset: {args.dataset} ({args.dataset_reason})")
    splits = load_image_dataset(
        args.dataset, data_dir=args.dataset_dir, image_column=args.image_column, label_column=args.label_column
    )
    if isinstance(splits, datasets.Dataset):
        splits = datasets.DatasetDict({str(splits.split or "train"): splits})
    if args.train_split not in splits:
        raise SystemExit(f"error: {args.dataset} has no --train_split {args.train_split!r}; its splits: {sorted(splits)}.")
    train_images = splits[args.train_split]
    if "label" not in train_images.column_names:
        raise SystemExit(
            f"error: {args.dataset} has no label column; the classifier needs labels (name it with --label_column)."
        )
    if args.test_split in splits:
        test_images = splits[args.test_split]
    else:
        size, note = training.held_out_size(len(train_images), args.test_size, "--test_size")
        held_out = train_images.train_test_split(test_size=size, seed=args.seed)
        train_images, test_images = held_out["train"], held_out["test"]
        PartialState().print(f"No {args.test_split!r} split: testing on {size} held-out training examples{note}.")
    for line in data_defaults(args, train_images):
        PartialState().print(f"Classifier input: {line}")
    model_config = LarpClassifierConfig(**args.model)
    model_config.num_classes = train_images.features["label"].num_classes
    size = {"height": model_config.image_size, "width": model_config.image_size}
    image_processor = LarpImageProcessor(num_channels=model_config.in_channels, size=size)
    if args.pad_to_size:
        native_size = image_processor.native_size_for(*first_image_size(train_images))
        image_processor = LarpImageProcessor(
            num_channels=model_config.in_channels, size=size, do_pad=True, native_size=native_size
        )
    if args.max_train_samples is not None:
        train_images = train_images.select(range(min(args.max_train_samples, len(train_images))))
    record = DatasetRecord.from_dataset(
        args.dataset, train_images, split=args.train_split, image_column=args.image_column,
        label_column=args.label_column, data_dir=args.dataset_dir,
    )  # fmt: skip
    train = InMemoryPixels(pixels_dataset(train_images, image_processor))
    test = InMemoryPixels(pixels_dataset(test_images, image_processor))
    return train, test, image_processor, model_config, record


def collate(examples, image_processor):
    pixels = torch.stack([example["pixels"] for example in examples])  # (B, C, H, W) uint8, already at the model's size
    return {
        "pixel_values": image_processor(pixels, do_resize=False, return_tensors="pt")["pixel_values"],
        "labels": torch.stack([example["label"] for example in examples]),
    }


@torch.no_grad()
def evaluate(model, dataloader, accelerator) -> dict:
    """Accuracy over the whole test split."""
    model.eval()
    correct, total = 0, 0
    for batch in dataloader:
        predictions = model(batch["pixel_values"]).logits.argmax(-1)
        predictions, labels = accelerator.gather_for_metrics((predictions, batch["labels"]))
        correct += (predictions == labels).sum().item()
        total += len(labels)
    model.train()
    return {"test_accuracy": correct / max(total, 1)}


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)

    # Accelerator (mixed precision, gradient accumulation, trackers) and the claim on OUTPUT_DIR, one run per folder.
    accelerator = training.start_run(args, inputs=inputs_of(args))

    # Data: decoded and resized once (cached by datasets), held in memory as uint8 tensors, normalised per batch.
    with accelerator.main_process_first():
        train_dataset, test_dataset, image_processor, model_config, training_images = load_splits(args)
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=partial(collate, image_processor=image_processor),
        num_workers=args.dataloader_num_workers,
        # Its own generator, so a new iterator after a resume draws nothing from the restored global RNG (the flips
        # and dropout do); the flips are drawn in the loop because accelerate prefetches a batch ahead.
        generator=torch.Generator().manual_seed(args.seed),
    )
    test_dataloader = torch.utils.data.DataLoader(
        test_dataset, batch_size=args.eval_batch_size, collate_fn=partial(collate, image_processor=image_processor)
    )

    # Model, optimizer and a cosine schedule after a quarter-epoch warmup. The schedule counts optimizer steps per
    # process: accelerate shards the batches and evens out the processes' counts (diffusers' examples count the same).
    model = LarpClassifierModel(model_config)
    num_parameters = model.num_parameters()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(
        math.ceil(len(train_dataloader) / accelerator.num_processes) / args.gradient_accumulation_steps
    )
    if args.epochs is None:
        args.epochs = max(DEFAULT_EPOCHS, math.ceil(MIN_DEFAULT_STEPS / steps_per_epoch))
        accelerator.print(f"Epochs: {args.epochs} of {steps_per_epoch} steps (at least {MIN_DEFAULT_STEPS} steps)")
    lr_scheduler = training.get_lr_scheduler(
        accelerator, args.lr_scheduler, optimizer, steps_per_epoch // 4, steps_per_epoch * args.epochs
    )
    model, optimizer, train_dataloader, test_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, test_dataloader, lr_scheduler
    )
    # The prepared dataloader is what the epochs are made of (the same count; read it rather than trust the sum).
    steps_per_epoch = training.optimizer_steps_per_epoch(accelerator, train_dataloader)
    max_steps = steps_per_epoch * args.epochs
    accelerator.init_trackers("train_classifier", config=training.tracker_config(args))
    accelerator.print(
        f"LarpClassifierModel: {num_parameters:,} parameters, {len(train_dataset)} train / "
        f"{len(test_dataset)} test images of {model_config.num_classes} classes, {args.epochs} epochs of "
        f"{steps_per_epoch} steps; {accelerator.num_processes} process(es) on {accelerator.device.type}"
    )

    # Resume: weights, optimizer, schedule, RNG states, the step count and the per-epoch history.
    state = training.resume_or_start_afresh(
        accelerator, args.resume_from_checkpoint, output_dir, config=training.run_config(args),
        resume_from_other_run=args.resume_from_other_run,
    )  # fmt: skip
    if args.resume_from_checkpoint is not None:
        accelerator.print(f"Resumed after epoch {state.step // steps_per_epoch}")

    # Training loop: train_batches picks up at the epoch where a resumed run stopped; test and checkpoint per epoch.
    progress = tqdm(total=max_steps, initial=state.step, desc="Training", disable=not accelerator.is_local_main_process)
    model.train()
    state.start_clock()
    for batch in training.train_batches(accelerator, train_dataloader, state, max_steps):
        pixel_values = batch["pixel_values"]
        if args.random_flip:
            pixel_values = random_horizontal_flip(pixel_values)
        with accelerator.accumulate(model):
            output = model(pixel_values, labels=batch["labels"])
            training.backward_and_step(accelerator, output.loss, model, optimizer, lr_scheduler)
        if not accelerator.sync_gradients:
            continue  # still accumulating gradients
        state.count_step()
        logs = {
            "train_loss": output.loss.item(),
            "train_accuracy": (output.logits.argmax(-1) == batch["labels"]).float().mean().item(),
            "lr": lr_scheduler.get_last_lr()[0],
        }
        progress.update(1)
        progress.set_postfix(loss=f"{logs['train_loss']:.3f}", accuracy=f"{logs['train_accuracy']:.1%}")
        accelerator.log(logs, step=state.step)

        if state.step % steps_per_epoch == 0:
            epoch = state.step // steps_per_epoch
            with training.preserve_random_state():  # testing or not, training draws the same random numbers
                metrics = {"epoch": epoch, **evaluate(model, test_dataloader, accelerator)}
            latest = training.record_validation(accelerator, state, metrics, output_dir)
            if accelerator.is_main_process:
                progress.write(f"epoch {epoch}: test accuracy {latest['test_accuracy']:.2%}")
            training.save_checkpoint(accelerator, output_dir, epoch, args.checkpoints_total_limit)
    progress.close()

    # The classifier and its image processor in save_pretrained format, then the metrics naming its weights.
    unwrapped = training.save_final_model(accelerator, model, output_dir, image_processor)
    if accelerator.is_main_process:
        final = training.write_final_metrics(
            output_dir,
            state,
            weights_sha256=unwrapped.weights_sha256(),
            dataset=args.dataset,
            num_parameters=num_parameters,
        )
        training_images.save(output_dir)
        accelerator.print(
            f"Saved the feature network to {output_dir}: test accuracy {final['test_accuracy']:.2%}, "
            f"weights SHA-256 {final['weights_sha256'][:16]}…"
        )
    accelerator.end_training()


if __name__ == "__main__":
    from larp_hf.errors import TRAINING_INTERRUPTED, run_script  # one error policy: a traceback only with --debug

    run_script(main, interrupted=TRAINING_INTERRUPTED)
