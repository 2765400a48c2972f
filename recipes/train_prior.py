#!/usr/bin/env python
"""Train the GPT-2 prior over a tokenizer's code grids with Accelerate.

    accelerate launch recipes/train_prior.py --config recipes/configs/prior_fashion_mnist_quick.yaml \
        --vqvae outputs/vqvae-fashion-mnist-quick --token_dataset outputs/tokens-fashion-mnist-quick

--token_dataset takes a save_to_disk folder, a Hub id, or a parquet folder or file, and is refused if another
tokenizer made it. Without it the recipe encodes --dataset with the tokenizer itself, every process its own part
(cached by `datasets`), or, with --encode_on_the_fly, encodes each batch in the training loop, on the process's device,
and keeps no encoded copy. Every flag can be
set in the YAML config (same name); the command line wins. The YAML's `model` mapping holds GPT2Config (or, with --architecture llama, LlamaConfig) overrides, and
`--model.FIELD VALUE` overrides one of them.

--dataset defaults to the dataset the tokenizer was trained on (its training_data.json); Fashion-MNIST only when it
records none. String labels become class ids in sorted order of their names.

Writes to OUTPUT_DIR: the last prior (`save_pretrained`, loadable with stock `AutoModelForCausalLM`; its config's
`id2label` names every class), the best one by validation loss in OUTPUT_DIR/best, `training_data.json` (the dataset
record the token dataset carries, or that of the images it encoded; `larp-hf assemble` keeps it in the pipeline),
`metrics.json` (final validation at the top level: loss in nats and bits per token, top-1/5/10 accuracy; the history
under `history`) and `checkpoints/checkpoint-STEP` for `--resume_from_checkpoint`.
"""

import argparse
import math
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from larp_hf import (
    LarpImageProcessor,
    LarpPipeline,
    LarpPriorCollator,
    load_tokenizer,
    prior_config,
    set_sampling_defaults,
)
from larp_hf.data import (
    DatasetRecord,
    PreprocessedImages,
    check_token_dataset,
    collate_images,
    encode_dataset,
    load_image_dataset,
    load_token_dataset,
    token_dataset_metadata,
)
from larp_hf.metrics import top_k_hits
from larp_hf.pipelines.image_grid import image_grid
from larp_hf.prior import ARCHITECTURES, PRIOR_PRESETS
from larp_hf import training


TOP_K = (1, 5, 10)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=training.DefaultsHelpFormatter)
    training.add_run_arguments(parser, output_dir="outputs/prior", eval_batch_size=256, learning_rate=1e-3)
    training.add_step_arguments(parser, train_batch_size=64, lr_warmup_steps=200)
    training.add_split_arguments(parser)
    parser.add_argument(
        "--vqvae", type=str, default=None,
        help="Folder or Hub id of the image tokenizer: any folder larp_hf.load_tokenizer recognises (a LarpVQVAEModel, "
        "a diffusers VQModel, JanusVQVAE or Emu3VQVAE save_pretrained folder, a converted checkpoint).",
    )  # fmt: skip
    parser.add_argument(
        "--token_dataset", type=str, default=None,
        help="A token dataset (encode_dataset.py): a save_to_disk folder, a Hub id, a parquet folder or file.",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", type=str, default=None,
        help="Images to encode without --token_dataset. Default: the dataset the tokenizer was trained on (its "
        "training_data.json); Fashion-MNIST when it records none.",
    )  # fmt: skip
    parser.add_argument("--image_column", type=str, default=None, help="--dataset: column of the images.")
    parser.add_argument("--label_column", type=str, default=None, help="--dataset: column of the labels.")
    parser.add_argument(
        "--encode_on_the_fly", action="store_true",
        help="Encode each batch of --dataset images with the tokenizer while training: no pre-encoded copy is kept.",
    )  # fmt: skip
    parser.add_argument("--dataset_dir", type=str, default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--preset", type=str, default="small", help=f"One of {sorted(PRIOR_PRESETS)}.")
    parser.add_argument(
        "--architecture", type=str, default="gpt2", choices=ARCHITECTURES,
        help="gpt2: GPT2LMHeadModel; llama: LlamaForCausalLM (RoPE, SwiGLU, RMSNorm). Same presets and token layout.",
    )  # fmt: skip
    parser.add_argument(
        "--num_classes", type=training.non_negative_int, default=0, help="0: unconditional; else class-conditional."
    )
    parser.add_argument("--class_dropout_prob", type=float, default=0.1, help="Class -> null token, for guidance.")
    parser.add_argument("--attention_dropout", type=float, default=0.0, help="Probability of masking a key per query.")
    parser.add_argument("--flip_augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--weight_decay", type=training.non_negative_float, default=0.1, help="On weight matrices only."
    )
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.95)
    parser.add_argument("--gradient_checkpointing", action="store_true", help="Trade compute for memory.")
    parser.add_argument("--torch_compile", action="store_true", help="Compile the prior with torch.compile.")
    parser.add_argument(
        "--num_grid_images", type=training.positive_int, default=16,
        help="--report_to: images the prior samples (seeded by --seed) into the trackers' grid at every validation.",
    )  # fmt: skip

    # Resuming, the model settings (and --preset, --architecture, --num_classes) are the checkpoint's.
    args = training.parse_args_with_config(
        parser, argv, lambda args: LlamaConfig if args.architecture == "llama" else GPT2Config,
        model_flags=("preset", "architecture", "num_classes"),
    )  # fmt: skip

    # Sanity checks (counts and rates are checked by their types).
    if args.vqvae is None:
        parser.error("--vqvae (the tokenizer's folder or Hub id) is required.")
    if args.encode_on_the_fly and args.token_dataset is not None:
        parser.error("--encode_on_the_fly encodes --dataset itself; drop --token_dataset (or the flag).")
    # Without a token dataset, the images default to the tokenizer's record (train_vqvae.py's training_data.json).
    args.dataset_reason = None
    if args.token_dataset is None:
        training.take_recorded_dataset(args, args.vqvae)
    if args.preset not in PRIOR_PRESETS:
        parser.error(f"unknown --preset {args.preset!r}; choose one of {sorted(PRIOR_PRESETS)}.")
    if not 0 <= args.attention_dropout < 1 or not 0 <= args.class_dropout_prob <= 1:
        parser.error("--attention_dropout must be in [0, 1) and --class_dropout_prob in [0, 1].")
    training.check_run_arguments(parser, args, inputs=inputs_of(args))
    return args


def inputs_of(args) -> dict[str, str | None]:
    """What the run reads, by flag: OUTPUT_DIR must be none of them, hold none and lie inside none."""
    images = args.token_dataset is None  # --dataset is encoded only without --token_dataset
    return {
        "--vqvae": args.vqvae,
        "--token_dataset": args.token_dataset,
        "--dataset": args.dataset if images else None,
        "--dataset_dir": args.dataset_dir if images else None,
    }


class OnTheFlyEncoder:
    """
    --encode_on_the_fly, in the training process: a batch of images (`pixel_values` on the process's device, `label`)
    -> the tokenizer's codes (and mirrored codes) -> the prior's inputs from `collator`, on that device. Not a
    collate function: those run in DataLoader workers, where CUDA cannot run after a fork.
    """

    def __init__(self, vqvae, collator: LarpPriorCollator, flip_augment: bool):
        self.vqvae, self.collator, self.flip_augment = vqvae, collator, flip_augment

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pixel_values = batch["pixel_values"]  # (B, C, H, W)
        # The tokenizer encodes in float32 whatever the run's mixed precision: its codes are those its hash stands for.
        with torch.autocast(device_type=pixel_values.device.type, enabled=False):
            codes = self.vqvae.encode(pixel_values.float()).flatten(1).cpu().numpy()  # (B, h·w)
            flipped = self.vqvae.encode(pixel_values.float().flip(-1)).flatten(1).cpu().numpy() if self.flip_augment else None
        examples = [{"input_ids": row} for row in codes]
        if flipped is not None:
            for example, row in zip(examples, flipped):
                example["input_ids_flipped"] = row
        if "label" in batch:
            for example, label in zip(examples, batch["label"].tolist()):
                example["label"] = label
        return {name: tensor.to(pixel_values.device) for name, tensor in self.collator(examples).items()}


def load_splits(
    args, vqvae, image_processor, accelerator
) -> tuple[datasets.Dataset, datasets.Dataset, DatasetRecord | None]:
    """
    The train and validation splits, call on every process: a token dataset from anywhere load_token_dataset reads
    (--token_dataset), refused if another tokenizer made it or its codes, lengths or labels do not fit; else the images
    of --dataset, encoded on every process (each its own part, larp_hf.data.encode_dataset) or, with
    --encode_on_the_fly, kept as images for the training loop to encode a batch at a time. Also the record of what
    the prior learns from (`training_data_record`).
    """
    with accelerator.main_process_first():  # the first load of a source writes the datasets cache
        if args.token_dataset is not None:
            splits = load_token_dataset(args.token_dataset)
        else:
            accelerator.print(f"Dataset: {args.dataset} ({args.dataset_reason})")
            splits = load_image_dataset(
                args.dataset, data_dir=args.dataset_dir, image_column=args.image_column, label_column=args.label_column
            )
        train, validation = training.select_splits(splits, args)
    if args.token_dataset is not None:
        for name, split in (("train", train), ("validation", validation)):
            check_token_dataset(
                split,
                tokenizer_hash=vqvae.tokenizer_hash(),
                grid=vqvae.grid,
                codebook_size=vqvae.codebook_size,
                num_classes=args.num_classes or None,
                name=f"--token_dataset {args.token_dataset} ({name} split)",
            )
        return train, validation, training_data_record(args, train)
    record = training_data_record(args, train)
    if args.encode_on_the_fly:
        return train, validation, record
    vqvae.to(accelerator.device)
    train, validation = (
        encode_dataset(vqvae, split, image_processor, flip_augment=args.flip_augment, num_proc=args.dataloader_num_workers)
        for split in (train, validation)
    )
    return train, validation, record


def images_record(args, train: datasets.Dataset) -> DatasetRecord:
    """The record of the images --dataset names (without --token_dataset): what the prior is trained on."""
    return DatasetRecord.from_dataset(
        args.dataset, train, split=args.train_split, image_column=args.image_column,
        label_column=args.label_column, data_dir=args.dataset_dir,
    )  # fmt: skip


def training_data_record(args, train: datasets.Dataset) -> DatasetRecord | None:
    """
    What the prior learns from, for OUTPUT_DIR/training_data.json: the record a token dataset carries (None for one
    made before records), or that of the images (`train`) it encodes. The split is the one it trains on.
    """
    if args.token_dataset is None:
        return images_record(args, train)
    recorded = token_dataset_metadata(train).get("dataset")
    if recorded is None:
        return None
    return DatasetRecord.from_dict({**recorded, "split": args.train_split})


def sample_grid(prior, vqvae, image_processor, num_images: int, seed: int):
    """A grid of images the prior samples now (the same seed at every validation), for the trackers."""
    was_training = prior.training
    pipeline = LarpPipeline(vqvae, prior, image_processor).to(next(prior.parameters()).device)
    pipeline.set_progress_bar_config(disable=True)
    # The prior's own layers (no prepacked copy): under the run's CPU autocast they take its bf16 activations.
    images = pipeline(num_images=num_images, seed=seed, output_type="pt", prepack_linears=False).images  # (N, C, H, W)
    prior.train(was_training)
    return image_grid(images)


@torch.no_grad()
def evaluate(model, dataloader, accelerator, encoder=None) -> dict:
    """Loss in nats and bits per predicted token and top-k accuracy, over the whole validation split."""
    model.eval()
    totals = torch.zeros(2 + len(TOP_K), dtype=torch.float64, device=accelerator.device)  # nll, count, correct@k
    for batch in dataloader:
        if encoder is not None:
            batch = encoder(batch)  # --encode_on_the_fly: images -> prior inputs
        logits = model(input_ids=batch["input_ids"]).logits[:, :-1].float()  # (B, T-1, V): position t predicts t+1
        targets = batch["labels"][:, 1:]
        predicted = targets != -100
        nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none") * predicted  # (B, T-1)
        # Sums per example, so that gather_for_metrics can drop the examples Accelerate repeats to even out the
        # processes' last batches.
        hits = [top_k_hits(logits, targets, k).sum(1) for k in TOP_K]  # (B,) each: labels within the top k
        per_example = torch.stack([nll.sum(1), predicted.sum(1), *hits], dim=1).double()  # (B, 2 + len(TOP_K))
        totals += accelerator.gather_for_metrics(per_example).sum(0)
    model.train()
    nll, count = totals[0].item(), max(totals[1].item(), 1.0)
    metrics = {"val_loss": nll / count, "val_bits_per_token": nll / count / math.log(2)}
    metrics.update({f"val_top{k}_accuracy": totals[2 + i].item() / count for i, k in enumerate(TOP_K)})
    return metrics


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)

    # Accelerator (mixed precision, gradient accumulation, trackers) and the claim on OUTPUT_DIR, one run per folder.
    accelerator = training.start_run(args, inputs=inputs_of(args))

    # Tokenizer and token data (a token dataset, or --dataset encoded on every process, each its own part).
    # Any folder load_tokenizer recognises: a LarpVQVAEModel, a diffusers VQModel, a JanusVQVAE or Emu3VQVAE, a
    # converted taming / LlamaGen checkpoint. The images are made what it reads (size, channels, value range).
    vqvae = load_tokenizer(args.vqvae).eval()
    image_processor = LarpImageProcessor.from_tokenizer(vqvae)
    train_tokens, val_tokens, dataset_record = load_splits(args, vqvae, image_processor, accelerator)
    if args.num_classes > 0:
        label_feature = train_tokens.features.get("label")
        if not isinstance(label_feature, datasets.ClassLabel) or label_feature.num_classes != args.num_classes:
            raise ValueError(
                f"--num_classes {args.num_classes} needs a `label` ClassLabel column with that many classes; the "
                f"token dataset has {label_feature!r}."
            )
    elif isinstance(train_tokens.features.get("label"), datasets.ClassLabel):
        # Unconditional is the default, but a labelled dataset may not mean it: say what the flag would do.
        names = train_tokens.features["label"].names
        accelerator.print(
            f"Note: the tokens have {len(names)} classes ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
            f"this prior is unconditional. --num_classes {len(names)} trains a class-conditional one."
        )

    # The prior: a stock GPT-2 or Llama whose config carries the tokenizer's identity.
    # Its id2label / label2id name every class, as the labels' ClassLabel does (string labels become one when loaded).
    class_names = list(train_tokens.features["label"].names) if args.num_classes > 0 else None
    config = prior_config(
        vqvae, preset=args.preset, num_classes=args.num_classes, tokenizer_hash=vqvae.tokenizer_hash(),
        architecture=args.architecture, class_names=class_names, **args.model
    )
    model = AutoModelForCausalLM.from_config(config)
    set_sampling_defaults(model)  # generation_config.json: sample one whole grid (temperature 1, no top-k)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    num_parameters = model.num_parameters()
    accelerator.print(
        f"{type(model).__name__} prior: {num_parameters / 1e6:.2f}M parameters, preset {args.preset!r}, vocabulary "
        f"{config.vocab_size}, {config.max_position_embeddings} positions; {len(train_tokens)} train / {len(val_tokens)} val sequences; "
        f"{accelerator.num_processes} process(es) on {accelerator.device.type}"
    )

    # Collators: augmentation (flips, class dropout, attention dropout) in training only.
    train_collator = LarpPriorCollator.from_prior_config(
        config,
        train=True,
        flip_prob=0.5 if args.flip_augment else 0.0,
        class_dropout_prob=args.class_dropout_prob,
        attention_dropout=args.attention_dropout,
        seed=args.seed,
    )
    eval_collator = LarpPriorCollator.from_prior_config(config, train=False)
    # Rows are read from the memory-mapped datasets a batch at a time. With --encode_on_the_fly they are images,
    # decoded and resized in the DataLoader workers and encoded in the training loop, on this process's device.
    train_encoder = val_encoder = None
    if args.encode_on_the_fly:
        vqvae.to(accelerator.device)
        train_encoder = OnTheFlyEncoder(vqvae, train_collator, flip_augment=args.flip_augment)
        val_encoder = OnTheFlyEncoder(vqvae, eval_collator, flip_augment=False)
        train_rows, val_rows = (PreprocessedImages(split, image_processor) for split in (train_tokens, val_tokens))
        train_collator = eval_collator = collate_images
    else:
        train_rows, val_rows = train_tokens.with_format("numpy"), val_tokens.with_format("numpy")
    train_dataloader = torch.utils.data.DataLoader(
        train_rows,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=len(train_rows) >= args.train_batch_size * accelerator.num_processes,
        collate_fn=train_collator,
        num_workers=args.dataloader_num_workers,
        # Its own generator, so a new iterator after a resume draws nothing from the restored global RNG.
        generator=torch.Generator().manual_seed(args.seed),
    )
    val_dataloader = torch.utils.data.DataLoader(
        val_rows, batch_size=args.eval_batch_size, collate_fn=eval_collator, num_workers=args.dataloader_num_workers
    )

    # AdamW with weight decay on matrices only (not on biases, norms or embeddings' 1-D parts); fused on GPU.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        fused=accelerator.device.type == "cuda",
    )
    lr_scheduler = training.get_lr_scheduler(
        accelerator, args.lr_scheduler, optimizer, args.lr_warmup_steps, args.max_steps
    )
    if args.torch_compile:
        model = torch.compile(model)
    model, optimizer, train_dataloader, val_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, val_dataloader, lr_scheduler
    )
    accelerator.init_trackers("train_prior", config=training.tracker_config(args))
    log_samples = training.trackers_take_images(accelerator)  # --report_to: a sample grid at every validation

    # Resume: weights, optimizer, schedule, RNG states, step count, history and best loss so far.
    state = training.resume_or_start_afresh(
        accelerator, args.resume_from_checkpoint, output_dir, config=training.run_config(args),
        resume_from_other_run=args.resume_from_other_run,
    )  # fmt: skip

    # Training loop: train_batches picks up at the epoch and batch where a resumed run stopped.
    progress = tqdm(total=args.max_steps, initial=state.step, desc="Training", disable=not accelerator.is_local_main_process)
    model.train()
    state.start_clock()
    for batch in training.train_batches(accelerator, train_dataloader, state, args.max_steps):
        if train_encoder is not None:
            batch = train_encoder(batch)  # --encode_on_the_fly: images -> prior inputs, on this process's device
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            training.backward_and_step(accelerator, loss, model, optimizer, lr_scheduler, args.max_grad_norm)
        if not accelerator.sync_gradients:
            continue  # still accumulating gradients
        state.count_step()
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.3f}")
        accelerator.log({"train_loss": loss.item(), "lr": lr_scheduler.get_last_lr()[0]}, step=state.step)

        if training.is_due(state.step, args.validation_steps, args.max_steps):
            with training.preserve_random_state():  # validating or not, training draws the same random numbers
                metrics = evaluate(model, val_dataloader, accelerator, val_encoder)
            latest = training.record_validation(accelerator, state, metrics, output_dir)
            if log_samples:
                with training.preserve_random_state():
                    prior = accelerator.unwrap_model(model)
                    grid = sample_grid(prior, vqvae, image_processor, args.num_grid_images, args.seed)
                training.log_image(accelerator, "samples", grid, state.step)
            if latest["val_loss"] < state.best_val_loss:
                state.best_val_loss, state.best_step = latest["val_loss"], state.step
                training.save_model(accelerator, model, output_dir / "best")  # on every process: FSDP gathers
            if accelerator.is_main_process:
                progress.write(
                    f"step {state.step}: val loss {latest['val_loss']:.4f} nats/token "
                    f"({latest['val_bits_per_token']:.3f} bits), top-1 {latest['val_top1_accuracy']:.1%}, "
                    f"top-5 {latest['val_top5_accuracy']:.1%}"
                )
        if training.is_due(state.step, args.checkpointing_steps, args.max_steps):
            training.save_checkpoint(accelerator, output_dir, state.step, args.checkpoints_total_limit)
    progress.close()

    # The last prior and the metrics.
    training.save_final_model(accelerator, model, output_dir)
    if accelerator.is_main_process:
        final = training.write_final_metrics(
            output_dir,
            state,
            num_parameters=num_parameters,
            best_val_loss=state.best_val_loss,
            best_step=state.best_step,
            preset=args.preset,
            architecture=args.architecture,
        )
        if dataset_record is not None:
            dataset_record.save(output_dir)
        accelerator.print(
            "Trained on " + (dataset_record.describe() if dataset_record else f"{args.token_dataset} (no dataset record)")
        )
        accelerator.print(
            f"Saved the prior to {output_dir}: val loss {final.get('val_loss', float('nan')):.4f} nats/token, top-5 "
            f"{final.get('val_top5_accuracy', float('nan')):.1%}, {final['train_seconds']:.0f} s of training."
        )
    accelerator.end_training()


if __name__ == "__main__":
    from larp_hf.errors import TRAINING_INTERRUPTED, run_script  # one error policy: a traceback only with --debug

    run_script(main, interrupted=TRAINING_INTERRUPTED)
