"""What a run's folder, OUTPUT_DIR, holds, and the run's claim on it (under its lock, `run_lock.py`)."""

import argparse
import sys
from pathlib import Path

from accelerate import Accelerator

from ..atomic_files import remove_swap_leftovers, swap_folder
from ..output_folders import output_overlap  # the rule of every command that writes; re-exported for the recipes
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


def resumes_another_run(resume_from_checkpoint: str | None, output_dir: str | Path) -> bool:
    """Whether `resume_from_checkpoint` names a checkpoint folder that is not in OUTPUT_DIR/checkpoints."""
    if resume_from_checkpoint in (None, "latest", "latest_intact"):
        return False
    return Path(resume_from_checkpoint).resolve().parent != (Path(output_dir) / CHECKPOINTS_DIR).resolve()


def resume_refusal(resume_from_checkpoint: str | None, output_dir: str | Path, resume_from_other_run: bool) -> str | None:
    """
    The refusal for a resume from a folder that is not there or that would mix two runs, or None. A checkpoint of
    another run is resumed only with
    `resume_from_other_run`, and then starts a new lineage in OUTPUT_DIR: resumed as if it were this folder's own, it
    would replace this folder's checkpoints, final model and metrics with the other run's continuation.
    """
    if resume_from_checkpoint not in (None, "latest", "latest_intact") and not Path(resume_from_checkpoint).is_dir():
        return (
            f"No checkpoint to resume from at {resume_from_checkpoint!r}: no such folder. Pass --resume_from_checkpoint "
            "a checkpoint-STEP folder, or 'latest' for the newest checkpoint of the run in --output_dir."
        )
    other = resumes_another_run(resume_from_checkpoint, output_dir)
    if other and not resume_from_other_run:
        return (
            f"--resume_from_checkpoint {resume_from_checkpoint} is a checkpoint of another run (not in "
            f"{Path(output_dir) / CHECKPOINTS_DIR}). Pass --resume_from_other_run to start a new run in {output_dir} "
            f"from it (its metrics record where it came from), or continue that run in its own folder "
            f"(--output_dir {Path(resume_from_checkpoint).parent.parent})."
        )
    if resume_from_other_run and not other:
        given = (
            "no --resume_from_checkpoint is given"
            if resume_from_checkpoint is None
            else f"--resume_from_checkpoint {resume_from_checkpoint} is this folder's own"
        )
        return (
            "--resume_from_other_run starts a new run from a checkpoint folder of another run, named by "
            f"--resume_from_checkpoint, but {given}. Drop --resume_from_other_run."
        )
    return None


def output_dir_refusal(args: argparse.Namespace, inputs: dict[str, str | Path | None] | None = None) -> str | None:
    """
    What a run's flags ask of OUTPUT_DIR that is refused before any work, or None: an output folder among the
    run's `inputs` (and, with `args.resume_from_other_run`, the checkpoint resumed), or a resume that would mix two
    runs (`resume_refusal`). The folder's content is checked under its lock (`claim_output_dir`).
    """
    other_run = getattr(args, "resume_from_other_run", False)
    refusal = resume_refusal(args.resume_from_checkpoint, args.output_dir, other_run)
    if refusal is None:
        reads = dict(inputs or {})
        if resumes_another_run(args.resume_from_checkpoint, args.output_dir):
            reads["--resume_from_checkpoint"] = args.resume_from_checkpoint
        refusal = output_overlap(args.output_dir, reads)
    return refusal


def continues_a_run(args: argparse.Namespace) -> bool:
    """Whether the run continues the one in OUTPUT_DIR (a resume from this folder's own checkpoints)."""
    return args.resume_from_checkpoint is not None and not resumes_another_run(args.resume_from_checkpoint, args.output_dir)


def claim_output_dir(
    accelerator: Accelerator, args: argparse.Namespace, inputs: dict[str, str | Path | None] | None = None
):
    """
    Make OUTPUT_DIR (`args.output_dir`) this run's for the run's life. First the refusals that need no lock
    (`output_dir_refusal`: an output among `inputs`, the folders and files the run reads by their flags; another
    run's checkpoint without `args.resume_from_other_run`). Then the main process takes OUTPUT_DIR/run.lock: a second
    run on the folder is refused with a message naming the holder, and the stale lock of a run that died is taken
    over with a warning. Under the lock it checks again that the folder holds no run unless
    `args.resume_from_checkpoint` continues it (a run started from another run's checkpoint starts afresh here); with
    `args.overwrite_output_dir` it swaps an empty folder in for the old run, then deletes it. Every process stops
    (SystemExit) when the claim fails. Call right after `make_accelerator`.
    """
    output_dir = Path(args.output_dir)
    continues = continues_a_run(args)
    replacing = not continues and args.overwrite_output_dir
    error = output_dir_refusal(args, inputs)  # the same on every process: paths only
    if error:
        raise SystemExit(f"error: {error}")
    try:
        if accelerator.is_main_process:
            lock = held_lock(output_dir)  # this process's earlier run in the folder, finished
            if lock is None:
                lock = RunLock(output_dir)
                warning = lock.acquire()
                if warning:
                    print(f"warning: {warning}", file=sys.stderr)
            if not continues and folder_holds_a_run(output_dir) and not replacing:
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


__all__ = [
    "CHECKPOINTS_DIR",
    "METRICS_FILE",
    "already_holds_a_run",
    "claim_output_dir",
    "continues_a_run",
    "folder_holds_a_run",
    "output_dir_refusal",
    "output_overlap",
    "resume_refusal",
    "resumes_another_run",
]
