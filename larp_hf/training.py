"""What the training recipes share: atomic checkpoints, the resumable step counter and atomic JSON writes."""

import argparse
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import yaml


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
    has_run = (output_dir / "metrics.json").exists() or any((output_dir / "checkpoints").glob("checkpoint-*"))
    if has_run and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
        parser.error(
            f"{output_dir} already holds a run. Pass --resume_from_checkpoint latest to continue it, "
            "--overwrite_output_dir to replace it, or another --output_dir."
        )


class TrainingState:
    """
    What `Accelerator.save_state` does not know about: the step count, the time spent and the best validation loss,
    so a resumed run continues all three. Register it with `accelerator.register_for_checkpointing`.
    """

    def __init__(self):
        self.step = 0
        self.train_seconds = 0.0
        self.best_val_loss = math.inf
        self.best_step = 0

    def state_dict(self):
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
        }

    def load_state_dict(self, state):
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.best_val_loss = float(state.get("best_val_loss", math.inf))
        self.best_step = int(state.get("best_step", 0))


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


def save_checkpoint(accelerator, checkpoints_dir: Path, step: int, total_limit: int | None):
    """Write the state to a temporary folder, then rename it: a crash never leaves a broken latest checkpoint."""
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


def write_json_atomic(path: Path, payload: dict):
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


__all__ = [
    "TrainingState",
    "parse_args_with_config",
    "refuse_to_overwrite_a_run",
    "find_latest_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "write_json_atomic",
]
