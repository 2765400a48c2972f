"""A run's set-up: the Accelerator, the claim on the output folder (under its lock), the learning-rate schedule."""

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DataLoaderConfiguration,
    ProjectConfiguration,
    gather_object,
    parse_flag_from_env,
    set_seed,
)
from transformers import get_scheduler

from ..checkpointing import fault_point
from ..run_lock import OutputDirBusyError, RunLock, held_lock
from .layout import _already_holds_a_run, folder_holds_a_run


MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")


def cpu_has_bf16() -> bool:
    """
    Whether this CPU does bf16 arithmetic in hardware, so that CPU autocast pays: AVX512-BF16 or AMX on x86, BF16
    on Arm (oneDNN's check). Plain AVX-512 passes oneDNN's check too, but only converts to and from bf16 there: it
    stays in fp32. False where torch cannot tell (these checks are private and may move).
    """
    try:
        if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return True
    except (AttributeError, RuntimeError):
        return False


def resolve_mixed_precision(mixed_precision: str | None, device_type: str) -> tuple[str | None, str]:
    """
    A recipe's `--mixed_precision` as `Accelerator(mixed_precision=...)` takes it, and why. `"auto"`: bf16 autocast
    on a CPU that does bf16 in hardware (`cpu_has_bf16`; what it gains and costs in quality on the quick models:
    bench/bench_cpu_precision.py); elsewhere, on GPUs and on other CPUs, `None`: what `accelerate launch` was told
    (its config's `mixed_precision`). `"no"`, `"fp16"`, `"bf16"` and `None` are kept as they are.
    """
    if mixed_precision not in (*MIXED_PRECISION_CHOICES, None):
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION_CHOICES} or None, got {mixed_precision!r}")
    if mixed_precision != "auto":
        return mixed_precision, "as asked" if mixed_precision else "as `accelerate launch` was told"
    if device_type != "cpu":
        return None, f"auto: on {device_type}, as `accelerate launch` was told"
    if cpu_has_bf16():
        return "bf16", "auto: this CPU does bf16 in hardware (AVX512-BF16/AMX), so CPU autocast"
    return None, "auto: this CPU has no bf16 arithmetic, so as `accelerate launch` was told"


def make_accelerator(
    output_dir: Path,
    seed: int,
    mixed_precision: str | None = None,
    gradient_accumulation_steps: int = 1,
    log_with: str | None = None,
    save_on_each_node: bool = False,
) -> Accelerator:
    """
    The recipes' `Accelerator`, with OUTPUT_DIR created (by the main process) and every random generator seeded.
    `mixed_precision=None` keeps what `accelerate launch` was told, `"auto"` is resolved by `resolve_mixed_precision`,
    and the choice and its reason are printed; trackers log to OUTPUT_DIR/logs. `save_on_each_node`: OUTPUT_DIR is on
    each node's own disk, so each node's local main process writes and finishes the checkpoints there (otherwise the
    main process alone writes, to a shared file system).
    """
    # The process's device (accelerate launch's choice) decides "auto". The state is made as the Accelerator's own
    # AcceleratorState makes it (ACCELERATE_USE_CPU: the CPU, and a torchrun world as a gloo world), then shared.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    mixed_precision, reason = resolve_mixed_precision(mixed_precision, state.device.type)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs"), save_on_each_node=save_on_each_node
        ),
        # Seedable sampler: the shuffle order is a function of (seed, epoch), so resuming replays the same batches.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    accelerator.print(f"Mixed precision: {accelerator.mixed_precision} ({reason}).")
    if _writes_files(accelerator):
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    return accelerator


def _writes_files(accelerator: Accelerator) -> bool:
    """Whether this process writes the run's shared files: the main process, or each node's with save_on_each_node."""
    if accelerator.project_configuration.save_on_each_node:
        return accelerator.is_local_main_process
    return accelerator.is_main_process


def _first_error(accelerator: Accelerator, error: str | None) -> str | None:
    """The first process's error, on every process: a collective, so all processes go on or stop together."""
    if accelerator.num_processes == 1:
        return error
    return next((message for message in gather_object([error]) if message), None)


def claim_output_dir(accelerator: Accelerator, args: argparse.Namespace):
    """
    Make OUTPUT_DIR (`args.output_dir`) this run's for the run's life. The main process takes OUTPUT_DIR/run.lock:
    a second run on the folder is refused with a message naming the holder, and the stale lock of a run that died is
    taken over with a warning. Under the lock it checks again that the folder holds no run unless
    `args.resume_from_checkpoint` continues it; with `args.overwrite_output_dir` it moves the old run aside in one
    rename, then deletes it. Every process stops (SystemExit) when the claim fails. Call right after
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
                raise OutputDirBusyError(_already_holds_a_run(output_dir))
        if replacing and _writes_files(accelerator):
            if folder_holds_a_run(output_dir):
                _move_old_run_aside(output_dir, lock if accelerator.is_main_process else None)
            for leftover in output_dir.parent.glob(f".{output_dir.name}.replaced-*"):
                shutil.rmtree(leftover)  # an old run a killed replacement had moved aside
    except (OutputDirBusyError, OSError) as failure:
        error = str(failure)
    error = _first_error(accelerator, error)
    if error:
        raise SystemExit(f"error: {error}")


def _move_old_run_aside(output_dir: Path, lock: RunLock | None):
    """
    Replace the run in `output_dir`: one rename moves the whole folder aside, a new empty one (locked again when
    `lock` is given) takes its place, then the old one is deleted. A crash leaves the old run whole, in the folder or
    beside it as `.NAME.replaced-*`.
    """
    aside = output_dir.parent / f".{output_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.replace(output_dir, aside)
    fault_point("overwrite.moved-aside")
    output_dir.mkdir()
    if lock is not None:
        lock.path = aside / lock.path.name  # the held lock file moved with the folder
        try:
            RunLock(output_dir).acquire()
        except OutputDirBusyError as busy:
            raise OutputDirBusyError(f"{busy} The old run was kept, moved to {aside}.") from None
        lock.release()
    shutil.rmtree(aside)
    print(f"Replaced the run in {output_dir} (overwrite_output_dir).")


def get_lr_scheduler(accelerator: Accelerator, name: str, optimizer, num_warmup_steps: int, num_training_steps: int):
    """A transformers schedule counted in optimizer steps, for `accelerator.prepare`."""
    # A prepared scheduler steps once per process at every optimizer step, so its lengths scale with the processes.
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=num_warmup_steps * accelerator.num_processes,
        num_training_steps=num_training_steps * accelerator.num_processes,
    )
