"""
The recipes' Accelerator and what depends on its processes: mixed precision (`auto` resolved), which processes write
the run's files, one error agreed on by every process, and the learning-rate schedule counted per process.
"""

import platform
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedType,
    ProjectConfiguration,
    gather_object,
    parse_flag_from_env,
    set_seed,
)
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
from transformers import get_scheduler


MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
# Accelerate takes fp16 on a CPU and then trains in fp32 without a word (CPU autocast has no fp16 path there).
FP16_ON_CPU = (
    "`mixed_precision` fp16 needs a GPU; this process runs on the CPU, where it would train in fp32. Use bf16 (CPU "
    "autocast) or no (fp32)."
)


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
    (its config's `mixed_precision`). `"no"`, `"fp16"`, `"bf16"` and `None` are kept as they are, except `"fp16"` on a
    CPU: refused (ValueError naming bf16 and no), as Accelerate would take it and train in fp32.
    """
    if mixed_precision not in (*MIXED_PRECISION_CHOICES, None):
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION_CHOICES} or None, got {mixed_precision!r}")
    if mixed_precision == "fp16" and device_type == "cpu":
        raise ValueError(FP16_ON_CPU)
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
    and the choice and its reason are printed; fp16 on a CPU is refused (ValueError: Accelerate would train in fp32),
    and so is a tracker that is unknown or not installed (`check_trackers`); trackers log to OUTPUT_DIR/logs.
    `save_on_each_node`: OUTPUT_DIR is on each node's own disk, so each node's local main process writes and finishes
    the checkpoints there (otherwise the main process alone writes, to a shared file system).
    """
    # The process's device (accelerate launch's choice) decides "auto". The state is made as the Accelerator's own
    # AcceleratorState makes it (ACCELERATE_USE_CPU: the CPU, and a torchrun world as a gloo world), then shared.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    mixed_precision, reason = resolve_mixed_precision(mixed_precision, state.device.type)
    check_trackers(log_with)
    if log_with is not None and log_with != "all":
        log_with = [name.strip() for name in log_with.split(",")]  # Accelerate takes a list, not "a,b"
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
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":  # as `accelerate launch` was told
        raise ValueError(FP16_ON_CPU.replace("`mixed_precision` fp16", "fp16 (`accelerate launch`'s mixed_precision)"))
    accelerator.print(f"Mixed precision: {accelerator.mixed_precision} ({reason}).")
    if writes_files(accelerator):
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    return accelerator


def check_trackers(log_with: str | None):
    """
    Refuse (ValueError) a `log_with` that Accelerate would drop with a warning: a name it does not know, or a tracker
    whose package is not installed, naming those that are and the package to install. `"all"` takes what is installed.
    """
    if log_with is None or log_with == "all":
        return
    known = sorted(str(getattr(kind, "value", kind)) for kind in LOGGER_TYPE_TO_CLASS)
    installed = sorted(str(getattr(kind, "value", kind)) for kind in get_available_trackers())
    for name in (part.strip() for part in log_with.split(",")):
        if name not in known:
            raise ValueError(f"`log_with` {name!r} is not a tracker Accelerate knows; it knows {', '.join(known)}.")
        if name not in installed:
            raise ValueError(
                f"`log_with` {name!r}: {name} is not installed (pip install {name}); installed trackers: "
                f"{', '.join(installed) or 'none'}."
            )


def trackers_take_images(accelerator: Accelerator) -> bool:
    """
    Whether the run has trackers to give image grids to. Not under FSDP: a grid is made by one unsharded model call
    outside the training step, which a sharded model cannot make (the scalars are still logged).
    """
    if not accelerator.trackers:
        return False
    if accelerator.distributed_type == DistributedType.FSDP:
        accelerator.print("warning: under FSDP the trackers get the scalars only, no image grids.")
        return False
    return True


def log_image(accelerator: Accelerator, name: str, image: PIL.Image.Image, step: int):
    """
    One image (a grid) to every tracker that takes images, at `step`: TensorBoard as an HWC array, the others (wandb,
    ...) through their `log_images` as a PIL image. Trackers without images (CSV-like ones) are skipped.
    """
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: np.asarray(image.convert("RGB"))[None]}, step=step, dataformats="NHWC")
        elif callable(getattr(tracker, "log_images", None)):
            tracker.log_images({name: [image]}, step=step)


def writes_files(accelerator: Accelerator) -> bool:
    """
    Whether this process writes the run's shared files (checkpoints, the final model, metrics.json): the main
    process, or each node's local main process with `save_on_each_node` (OUTPUT_DIR on each node's own disk).
    """
    if accelerator.project_configuration.save_on_each_node:
        return accelerator.is_local_main_process
    return accelerator.is_main_process


def first_error(accelerator: Accelerator, error: str | None) -> str | None:
    """
    The first process's error message (None where no process had one), returned on every process: a collective
    (call it on every process), so that all processes go on or stop together. Each process passes its own error.
    """
    if accelerator.num_processes == 1:
        return error
    return next((message for message in gather_object([error]) if message), None)


def get_lr_scheduler(accelerator: Accelerator, name: str, optimizer, num_warmup_steps: int, num_training_steps: int):
    """A transformers schedule counted in optimizer steps, for `accelerator.prepare`."""
    # A prepared scheduler steps once per process at every optimizer step, so its lengths scale with the processes.
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=num_warmup_steps * accelerator.num_processes,
        num_training_steps=num_training_steps * accelerator.num_processes,
    )


__all__ = [
    "FP16_ON_CPU",
    "MIXED_PRECISION_CHOICES",
    "check_trackers",
    "cpu_has_bf16",
    "first_error",
    "get_lr_scheduler",
    "log_image",
    "make_accelerator",
    "resolve_mixed_precision",
    "trackers_take_images",
    "writes_files",
]
