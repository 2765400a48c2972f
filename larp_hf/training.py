"""
The parts of the training recipes that took debugging to get right, in one place: `--config` parsing, the Accelerator,
learning-rate schedule and train/validation split set-up, exact resume (state, batches, history), the validation and
checkpoint schedule, atomic checkpoints and metrics, and the check that every process ends with the same weights. The
recipes themselves stay standalone scripts that read top to bottom (recipes/train_*.py).
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import datasets
import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from transformers import get_scheduler


# A run's folder, OUTPUT_DIR, holds the final model, METRICS_FILE (the latest validation at the top level, every one
# under `history`) and CHECKPOINTS_DIR/checkpoint-STEP folders.
METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"


def parse_args_with_config(parser: argparse.ArgumentParser, argv, model_config_class) -> argparse.Namespace:
    """
    Parse a recipe's flags in two passes: `--config x.yaml` sets their defaults, the command line overrides them.
    The YAML's `model:` mapping and `--model.FIELD VALUE` flags go to `args.model`, checked against the fields of
    `model_config_class`; unknown YAML keys, flags and fields are errors.
    """
    config_args, _ = parser.parse_known_args(argv)
    model_overrides = {}
    if config_args.config is not None:
        with open(config_args.config) as handle:
            file_config = yaml.safe_load(handle) or {}
        model_overrides.update(file_config.pop("model", None) or {})
        unknown = sorted(set(file_config) - {action.dest for action in parser._actions})
        if unknown:
            parser.error(f"{config_args.config} sets unknown options {unknown}; see --help for the valid ones.")
        parser.set_defaults(**file_config)
    args, rest = parser.parse_known_args(argv)
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--model.") or not rest:
            parser.error(f"unrecognized argument {flag!r}")
        model_overrides[flag[len("--model.") :]] = yaml.safe_load(rest.pop(0))
    unknown_fields = sorted(set(model_overrides) - {field.name for field in dataclasses.fields(model_config_class)})
    if unknown_fields:
        parser.error(f"unknown {model_config_class.__name__} fields {unknown_fields} (in `model:` or --model.FIELD).")
    args.model = model_overrides
    return args


def refuse_to_overwrite_a_run(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """A folder with metrics.json or checkpoints holds a run: continue it or replace it explicitly, never by accident."""
    output_dir = Path(args.output_dir)
    has_run = (output_dir / METRICS_FILE).exists() or any((output_dir / CHECKPOINTS_DIR).glob("checkpoint-*"))
    if has_run and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
        parser.error(
            f"{output_dir} already holds a run. Pass --resume_from_checkpoint latest to continue it, "
            "--overwrite_output_dir to replace it, or another --output_dir."
        )


def make_accelerator(
    output_dir: Path,
    seed: int,
    mixed_precision: str | None = None,
    gradient_accumulation_steps: int = 1,
    log_with: str | None = None,
) -> Accelerator:
    """
    The recipes' `Accelerator`, with OUTPUT_DIR created (by the main process) and every random generator seeded.
    `mixed_precision=None` keeps what `accelerate launch` was told; trackers log to OUTPUT_DIR/logs.
    """
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # Seedable sampler: the shuffle order is a function of (seed, epoch), so resuming replays the same batches.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    return accelerator


def get_lr_scheduler(accelerator: Accelerator, name: str, optimizer, num_warmup_steps: int, num_training_steps: int):
    """A transformers schedule counted in optimizer steps, for `accelerator.prepare`."""
    # A prepared scheduler steps once per process at every optimizer step, so its lengths scale with the processes.
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=num_warmup_steps * accelerator.num_processes,
        num_training_steps=num_training_steps * accelerator.num_processes,
    )


def select_splits(
    splits: datasets.Dataset | datasets.DatasetDict, args: argparse.Namespace
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """
    The training and validation sets that a recipe's data flags ask for: --train_split; --validation_split or, where
    the data has no such split, --validation_size examples of the training split held out (a draw seeded by --seed);
    then the first --max_train_samples and --max_validation_samples only. A lone `Dataset` is the training split.
    """
    if isinstance(splits, datasets.Dataset):
        splits = datasets.DatasetDict({"train": splits})
    if args.train_split not in splits:
        raise ValueError(f"There is no --train_split {args.train_split!r}; the splits are {sorted(splits)}.")
    train = splits[args.train_split]
    if args.validation_split in splits:
        validation = splits[args.validation_split]
    else:
        held_out = train.train_test_split(test_size=args.validation_size, seed=args.seed)
        train, validation = held_out["train"], held_out["test"]
        PartialState().print(f"No {args.validation_split!r} split: holding out {len(validation)} training examples.")
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_validation_samples is not None:
        validation = validation.select(range(min(args.max_validation_samples, len(validation))))
    return train, validation


def tracker_config(args: argparse.Namespace) -> dict:
    """The flags and `model.FIELD`s that trackers such as TensorBoard accept: scalars only."""
    scalar = (int, float, str, bool)
    config = {name: value for name, value in vars(args).items() if isinstance(value, scalar)}
    config.update({f"model.{name}": value for name, value in args.model.items() if isinstance(value, scalar)})
    return config


class TrainingState:
    """
    What `Accelerator.save_state` does not know about: the step count, the time spent, the best validation loss and
    the validation history, so a resumed run continues all four. `resume_or_start_afresh` makes one and registers it
    for checkpointing.
    """

    def __init__(self):
        self.step = 0
        self.train_seconds = 0.0
        self.best_val_loss = math.inf
        self.best_step = 0
        self.history = []  # one entry per validation: its metrics, `step` and `train_seconds`
        self._clock_start = None

    def start_clock(self):
        """Start timing the training loop, counting on from the time a resumed run had spent already."""
        self._clock_start = time.perf_counter() - self.train_seconds

    def count_step(self):
        """Count an optimizer step and the time spent up to it."""
        self.step += 1
        self.train_seconds = time.perf_counter() - self._clock_start

    def state_dict(self):
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "history": self.history,
        }

    def load_state_dict(self, state):
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        self.best_step = int(state.get("best_step", 0))
        # None for a checkpoint written before the history was saved with it: resume_or_start_afresh reads metrics.json.
        self.history = list(state["history"]) if "history" in state else None


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def find_latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint. Half-written ones live under a `.tmp-` name and are never picked."""
    if not checkpoints_dir.is_dir():
        return None
    done = [p for p in checkpoints_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(done, key=checkpoint_step, default=None)


def resolve_checkpoint(resume_from_checkpoint: str, checkpoints_dir: Path) -> Path:
    """`latest` or a folder -> the checkpoint folder; a clear SystemExit when there is none."""
    if resume_from_checkpoint == "latest":
        checkpoint = find_latest_checkpoint(checkpoints_dir)
    else:
        checkpoint = Path(resume_from_checkpoint)
    if checkpoint is None or not checkpoint.is_dir():
        raise SystemExit(
            f"No checkpoint to resume from at {resume_from_checkpoint!r} (looked in {checkpoints_dir}). "
            "Drop --resume_from_checkpoint to start from scratch."
        )
    return checkpoint


def resume_or_start_afresh(
    accelerator: Accelerator, resume_from_checkpoint: str | None, output_dir: Path
) -> TrainingState:
    """
    Call after `accelerator.prepare`. Returns a `TrainingState`, registered for checkpointing. With
    `resume_from_checkpoint` (`latest` or a folder), everything the checkpoint holds is restored: weights, optimizer,
    schedule, random states and the state. Without, the old checkpoints in OUTPUT_DIR are deleted, so
    that a later `resume_from_checkpoint="latest"` can never pick one of another run.
    """
    state = TrainingState()
    accelerator.register_for_checkpointing(state)  # before load_state, which restores what is registered
    checkpoints_dir = output_dir / CHECKPOINTS_DIR
    if resume_from_checkpoint is not None:
        checkpoint = resolve_checkpoint(resume_from_checkpoint, checkpoints_dir)
        accelerator.print(f"Resuming from {checkpoint}")
        accelerator.load_state(str(checkpoint))
        metrics_path = output_dir / METRICS_FILE
        if state.history is None:
            history = json.loads(metrics_path.read_text()).get("history", []) if metrics_path.exists() else []
            state.history = [entry for entry in history if entry["step"] <= state.step]
    elif accelerator.is_main_process and checkpoints_dir.exists():
        shutil.rmtree(checkpoints_dir)
    accelerator.wait_for_everyone()
    return state


def optimizer_steps_per_epoch(accelerator: Accelerator, train_dataloader) -> int:
    """Optimizer steps in one pass over a prepared dataloader; a last, partial accumulation is a step too."""
    # Accelerate syncs gradients at the end of the dataloader whatever the accumulation count.
    steps = math.ceil(len(train_dataloader) / accelerator.gradient_accumulation_steps)
    if steps == 0:
        raise ValueError("The training dataloader yields no batches: the training split is empty.")
    return steps


def train_batches(accelerator: Accelerator, train_dataloader, state: TrainingState, max_steps: int):
    """
    Yield training batches, epoch after epoch, until `state.step` (which the loop counts up at each optimizer step)
    reaches `max_steps`. The epoch and the place in it follow from `state.step`, so a resumed run sees the very
    batches the interrupted one would have seen next.
    """
    epoch, step_in_epoch = divmod(state.step, optimizer_steps_per_epoch(accelerator, train_dataloader))
    while state.step < max_steps:
        train_dataloader.set_epoch(epoch)
        # After a resume, skip the batches of this epoch that were already trained on.
        skip = step_in_epoch * accelerator.gradient_accumulation_steps
        for batch in accelerator.skip_first_batches(train_dataloader, skip):
            yield batch
            if state.step >= max_steps:
                return
        step_in_epoch = 0
        epoch += 1


def backward_and_step(accelerator: Accelerator, loss, model, optimizer, lr_scheduler, max_grad_norm: float = 0.0):
    """
    Backward, then (inside `accelerator.accumulate(model)`) the optimizer and schedule steps, which Accelerate skips
    until the gradients are synced; gradients are clipped to `max_grad_norm` (0: not clipped) when they are.
    """
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def is_due(step: int, every: int, max_steps: int) -> bool:
    """Validation and checkpoint schedule: every `every` steps, and always at the last one."""
    return step % every == 0 or step == max_steps


def record_validation(accelerator: Accelerator, state: TrainingState, metrics: dict, output_dir: Path) -> dict:
    """
    Stamp validation metrics (already reduced over the processes) with the step and training time, add them to the
    history, log them to the trackers and write OUTPUT_DIR/metrics.json. Returns the entry.
    """
    # Milliseconds: a short run's seconds must not round to 0.
    entry = {**metrics, "step": state.step, "train_seconds": round(state.train_seconds, 3)}
    state.history.append(entry)
    accelerator.log({name: value for name, value in entry.items() if name != "step"}, step=state.step)
    if accelerator.is_main_process:
        write_json_atomic(output_dir / METRICS_FILE, {**entry, "history": state.history})
    return entry


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, total_limit: int | None):
    """
    Save the state as OUTPUT_DIR/checkpoints/checkpoint-STEP, keeping the newest `total_limit`. It is written to a
    temporary folder, then renamed: a crash never leaves a broken latest checkpoint.
    """
    checkpoints_dir = output_dir / CHECKPOINTS_DIR
    final = checkpoints_dir / f"checkpoint-{step}"
    partial = checkpoints_dir / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)  # atomic on POSIX
        if total_limit is not None and total_limit > 0:
            done = sorted((p for p in checkpoints_dir.glob("checkpoint-*") if p.is_dir()), key=checkpoint_step)
            for old in done[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def check_weights_identical(accelerator: Accelerator, model: torch.nn.Module):
    """Data parallelism must leave every process with the same weights: check it rather than assume it."""
    unwrapped = accelerator.unwrap_model(model)
    checksum = torch.stack([p.detach().double().sum() for p in unwrapped.parameters()]).sum().reshape(1)
    checksums = accelerator.gather(checksum.to(accelerator.device))
    if not torch.all(checksums == checksums[0]):
        raise RuntimeError(f"The processes ended with different weights (parameter sums {checksums.tolist()}).")
    accelerator.print(f"Parameters identical across {accelerator.num_processes} process(es).")


def save_final_model(accelerator: Accelerator, model: torch.nn.Module, output_dir: Path, *processors):
    """
    Check that every process ends with the same weights, then save them (and any processors) once, in
    `save_pretrained` format. Returns the unwrapped model.
    """
    check_weights_identical(accelerator, model)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        for part in (unwrapped, *processors):
            part.save_pretrained(output_dir)
    return unwrapped


def write_final_metrics(output_dir: Path, state: TrainingState, **extra) -> dict:
    """
    OUTPUT_DIR/metrics.json of a finished run: the last validation at the top level (also when a resumed run had
    nothing left to train), the step count, the training time, `extra` and the history. Returns what it wrote.
    """
    latest = state.history[-1] if state.history else {}
    final = {**latest, "step": state.step, "train_seconds": round(state.train_seconds, 3), **extra}
    final["history"] = state.history
    write_json_atomic(output_dir / METRICS_FILE, final)
    return final


def write_json_atomic(path: Path, payload: dict):
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


__all__ = [
    "TrainingState",
    "backward_and_step",
    "check_weights_identical",
    "find_latest_checkpoint",
    "get_lr_scheduler",
    "is_due",
    "make_accelerator",
    "optimizer_steps_per_epoch",
    "parse_args_with_config",
    "record_validation",
    "refuse_to_overwrite_a_run",
    "resolve_checkpoint",
    "resume_or_start_afresh",
    "save_checkpoint",
    "save_final_model",
    "select_splits",
    "tracker_config",
    "train_batches",
    "write_final_metrics",
    "write_json_atomic",
]
