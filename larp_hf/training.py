"""What the training recipes share: atomic checkpoints, the resumable step counter and atomic JSON writes."""

import json
import math
import os
import shutil
from pathlib import Path


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
    "find_latest_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "write_json_atomic",
]
