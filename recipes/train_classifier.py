#!/usr/bin/env python
"""Train the feature network of the sample metrics: a small CNN classifier on a labelled image dataset.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/train_classifier.py \
        --output_dir outputs/features-fashion-mnist
    python recipes/train_classifier.py --epochs 1 --output_dir /tmp/features

FID and precision/recall need a feature space that knows the domain. Inception-v3 needs downloaded weights and was
trained on ImageNet photos, not 32×32 garments; a classifier trained on the real data works offline and its
penultimate layer separates what matters in this domain. Scores computed on it are reported under its name
("FID (fashion_mnist classifier features)") with its weights' SHA-256.

Writes to OUTPUT_DIR: the classifier and its image processor (`save_pretrained` format), `metrics.json` (test
accuracy per epoch, the final one at the top level, and `weights_sha256`) and `checkpoints/checkpoint-EPOCH` after
every epoch (written to a temporary folder and renamed); `--resume_from_checkpoint latest` continues an interrupted run
exactly where it stopped (same shuffles, flips and random state).
"""

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from larp_hf import LarpImageProcessor
from larp_hf.data import load_image_dataset, pixels_dataset
from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel
from larp_hf.training import resolve_checkpoint, save_checkpoint


class EpochHistory:
    """Test accuracy after each finished epoch; saved with every checkpoint so a resumed run keeps the whole history."""

    def __init__(self):
        self.epochs = []

    def state_dict(self):
        return {"epochs": self.epochs}

    def load_state_dict(self, state):
        self.epochs = list(state["epochs"])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist", help="'fashion_mnist', a folder or a Hub id (with labels).")
    parser.add_argument("--dataset_dir", default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Train on at most this many (for tests).")
    parser.add_argument("--image_size", type=int, default=32, help="Input side; match the tokenizer's image_size.")
    parser.add_argument("--in_channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--hidden_channels", default="32,64,128", help="Channels per stage, comma-separated.")
    parser.add_argument("--feature_dim", type=int, default=128)
    parser.add_argument("--output_dir", default="outputs/features-fashion-mnist")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Replace a model already in OUTPUT_DIR.")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--weight_decay", type=float, default=5e-4)
    parser.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=True, help="Horizontal flips.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder.")
    parser.add_argument("--checkpoints_total_limit", type=int, default=2, help="Keep this many epoch checkpoints.")
    args = parser.parse_args(argv)
    args.hidden_channels = [int(c) for c in args.hidden_channels.split(",")]
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch_size must be at least 1.")
    output = Path(args.output_dir)
    if (output / "config.json").exists() and not args.overwrite_output_dir and not args.resume_from_checkpoint:
        parser.error(f"{output} already holds a model; pass --overwrite_output_dir to replace it, or pick another folder.")
    return args


def model_inputs(processor: LarpImageProcessor, pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 at the model's size -> normalised float inputs."""
    return processor(pixels, do_resize=False, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def accuracy(model, pixels: torch.Tensor, labels: torch.Tensor, processor: LarpImageProcessor, batch_size: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(pixels), batch_size):
        inputs = model_inputs(processor, pixels[start : start + batch_size]).to(model.device)
        correct += (model(inputs).logits.argmax(-1).cpu() == labels[start : start + batch_size]).sum().item()
    model.train()
    return correct / len(pixels)


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator()
    set_seed(args.seed)

    # Data: decoded and resized once (cached), held in memory as uint8 tensors.
    processor = LarpImageProcessor(num_channels=args.in_channels, size={"height": args.image_size, "width": args.image_size})
    with accelerator.main_process_first():
        splits = {
            split: pixels_dataset(load_image_dataset(args.dataset, split=split, data_dir=args.dataset_dir), processor)
            for split in (args.train_split, args.test_split)
        }
    tensors = {split: dataset.with_format("torch")[:] for split, dataset in splits.items()}
    if "label" not in splits[args.train_split].column_names:
        raise SystemExit(f"error: {args.dataset} has no `label` column; the feature network is a classifier and needs labels.")
    train_pixels, train_labels = tensors[args.train_split]["pixels"], tensors[args.train_split]["label"]
    if args.max_train_samples:
        train_pixels, train_labels = train_pixels[: args.max_train_samples], train_labels[: args.max_train_samples]
    test_pixels, test_labels = tensors[args.test_split]["pixels"], tensors[args.test_split]["label"]
    num_classes = splits[args.train_split].features["label"].num_classes

    config = LarpClassifierConfig(
        in_channels=args.in_channels, image_size=args.image_size, num_classes=num_classes,
        hidden_channels=args.hidden_channels, feature_dim=args.feature_dim,
    )  # fmt: skip
    model = LarpClassifierModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_pixels) / (args.batch_size * accelerator.num_processes))
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=steps_per_epoch // 4, num_training_steps=steps_per_epoch * args.epochs)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    accelerator.print(
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(train_pixels)} train / {len(test_pixels)} test "
        f"images of {num_classes} classes, {args.epochs} epochs of {steps_per_epoch} steps"
    )

    # Resume: model, optimizer, scheduler and RNG states from the checkpoint; the history from EpochHistory.
    history = EpochHistory()
    accelerator.register_for_checkpointing(history)
    checkpoints_dir = Path(args.output_dir) / "checkpoints"
    if args.overwrite_output_dir and not args.resume_from_checkpoint and accelerator.is_main_process:
        shutil.rmtree(checkpoints_dir, ignore_errors=True)  # a fresh run must never resume the old run's epochs
    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, checkpoints_dir)
        accelerator.load_state(str(checkpoint))
        accelerator.print(f"Resumed from {checkpoint} after epoch {len(history.epochs)}")
    first_epoch = len(history.epochs)

    # Training: each process takes its share of a seeded permutation per epoch (drawn for skipped epochs too, so a
    # resumed run sees the same shuffles and flips).
    generator = torch.Generator().manual_seed(args.seed)
    start_time = time.perf_counter() - (history.epochs[-1]["train_seconds"] if history.epochs else 0.0)
    bar = tqdm(
        total=steps_per_epoch * args.epochs, initial=steps_per_epoch * first_epoch, desc="Training",
        disable=not accelerator.is_local_main_process,
    )  # fmt: skip
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_pixels), generator=generator)
        flips = torch.rand(len(train_pixels), generator=generator) < 0.5
        if epoch < first_epoch:
            continue
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size * accelerator.num_processes :][: args.batch_size * accelerator.num_processes]
            batch = batch[accelerator.process_index :: accelerator.num_processes]
            inputs = model_inputs(processor, train_pixels[batch]).to(accelerator.device)
            if args.random_flip:
                inputs = torch.where(flips[batch, None, None, None].to(inputs.device), inputs.flip(-1), inputs)
            loss = model(inputs, labels=train_labels[batch].to(accelerator.device)).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        test_accuracy = accuracy(accelerator.unwrap_model(model), test_pixels, test_labels, processor, 512)
        seconds = round(time.perf_counter() - start_time, 1)
        history.epochs.append({"epoch": epoch + 1, "test_accuracy": test_accuracy, "train_seconds": seconds})
        accelerator.print(f"\nepoch {epoch + 1}: test accuracy {test_accuracy:.2%}")
        save_checkpoint(accelerator, Path(args.output_dir), epoch + 1, args.checkpoints_total_limit)
    bar.close()
    history = history.epochs

    # Save: write to a temporary folder, then move each file over its old version (os.replace is atomic).
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        output = Path(args.output_dir)
        temporary = output / ".tmp-model"
        shutil.rmtree(temporary, ignore_errors=True)
        unwrapped.save_pretrained(temporary)
        processor.save_pretrained(temporary)
        metrics = {
            **history[-1],
            "weights_sha256": unwrapped.weights_sha256(),
            "dataset": args.dataset,
            "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
            "history": history,
        }
        (temporary / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        for path in sorted(temporary.iterdir(), key=lambda p: p.name == "metrics.json"):  # metrics.json last
            os.replace(path, output / path.name)
        temporary.rmdir()
        accelerator.print(f"Saved the feature network to {output}: test accuracy {history[-1]['test_accuracy']:.2%}, "
                          f"weights SHA-256 {metrics['weights_sha256'][:16]}…")
    accelerator.end_training()


if __name__ == "__main__":
    main()
