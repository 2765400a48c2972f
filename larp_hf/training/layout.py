"""What a run's folder, OUTPUT_DIR, holds, and the run's claim on it (under its lock, `run_lock.py`)."""

import argparse
import sys
from pathlib import Path

from accelerate import Accelerator

from ..atomic_files import remove_swap_leftovers, swap_folder
from .accelerator import first_error, writes_files
from .fault_injection import fault_point
from .run_lock import OutputDirBusyError, RunLock, held_lock


# A run's folder, OUTPUT_DIR, holds the final model, METRICS_FILE (the latest validation at the top level, every one
# under `history`) and CHECKPOINTS_DIR/checkpoint-STEP folders.
METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"


def folder_holds_a_run(output_dir: Path) -> bool:
    """Whether `output_dir` holds a run: its metrics.json or a checkpoint (a run.json alone holds nothing to lose)."""
    return (output_dir / METRICS_FILE).exists() or any((output_dir / CHECKPOINTS_DIR).glob("checkpoint-*"))


def already_holds_a_run(output_dir: Path) -> str:
    """The refusal for a run started on `output_dir` that holds a run, naming the flags that continue or replace it."""
    return (
        f"{output_dir} already holds a run. Pass --resume_from_checkpoint latest to continue it, "
        "--overwrite_output_dir to replace it, or another --output_dir."
    )


def claim_output_dir(accelerator: Accelerator, args: argparse.Namespace):
    """
    Make OUTPUT_DIR (`args.output_dir`) this run's for the run's life. The main process takes OUTPUT_DIR/run.lock:
    a second run on the folder is refused with a message naming the holder, and the stale lock of a run that died is
    taken over with a warning. Under the lock it checks again that the folder holds no run unless
    `args.resume_from_checkpoint` continues it; with `args.overwrite_output_dir` it swaps an empty folder in for the
    old run, then deletes it. Every process stops (SystemExit) when the claim fails. Call right after
    `make_accelerator`.
    """
    output_dir = Path(args.output_dir)
    replacing = args.resume_from_checkpoint is None and args.overwrite_output_dir
    error = None
    try:
        if accelerator.is_main_process:
            lock = held_lock(output_dir)  # this process's earlier run in the folder, finished
            if lock is None:
                lock = RunLock(output_dir)
                warning = lock.acquire()
                if warning:
                    print(f"warning: {warning}", file=sys.stderr)
            if args.resume_from_checkpoint is None and folder_holds_a_run(output_dir) and not replacing:
                lock.release()
                raise OutputDirBusyError(already_holds_a_run(output_dir))
        if replacing and writes_files(accelerator):
            if folder_holds_a_run(output_dir):
                _move_old_run_aside(output_dir, lock if accelerator.is_main_process else None)
            remove_swap_leftovers(output_dir)  # an old run, or its empty successor, that a killed replacement left
    except (OutputDirBusyError, OSError) as failure:
        error = str(failure)
    error = first_error(accelerator, error)
    if error:
        raise SystemExit(f"error: {error}")


def _move_old_run_aside(output_dir: Path, lock: RunLock | None):
    """
    Replace the run in `output_dir` by an empty folder, locked already when `lock` is given, in one folder swap
    (`larp_hf.atomic_files.swap_folder`). A crash leaves the old run whole, in the folder or beside it as
    `.old-NAME-*`.
    """
    new_lock = None
    with swap_folder(output_dir, on_step=lambda step: fault_point(f"overwrite.{step}")) as empty:
        if lock is not None:
            new_lock = RunLock(empty)
            new_lock.acquire()  # nobody else knows the new folder yet
    if lock is not None:
        # The lock files moved with their folders: the new one is OUTPUT_DIR's now, the old one went with the old run.
        new_lock.path, lock.path = lock.path, new_lock.path
        lock.release()
    print(f"Replaced the run in {output_dir} (overwrite_output_dir).")


__all__ = ["CHECKPOINTS_DIR", "METRICS_FILE", "already_holds_a_run", "claim_output_dir", "folder_holds_a_run"]
