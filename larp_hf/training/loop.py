"""The training loop's steps: the batches, the optimizer step, the validation and checkpoint schedule and record."""

import math
from pathlib import Path

import torch
from accelerate import Accelerator

from ..atomic_files import write_json_atomic
from .layout import METRICS_FILE
from .state import TrainingState


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


def stop_if_not_finite(accelerator: Accelerator, loss: torch.Tensor):
    """
    Raise FloatingPointError on every process when the loss of any process is NaN or infinite: before its backward,
    so that no step moves the weights with it and nothing non-finite is ever saved.
    """
    finite = torch.isfinite(loss.detach()).all().reshape(1).to(torch.int64)
    if accelerator.num_processes > 1:
        finite = accelerator.gather(finite)  # (num_processes,): every process decides on the same numbers
    if not bool(finite.all()):
        processes = [index for index, ok in enumerate(finite.tolist()) if not ok]
        raise FloatingPointError(
            f"The training loss is not finite (NaN or infinite) on process(es) {processes}; training stops before "
            "anything non-finite is saved. Lower the learning rate, clip the gradients, or check the data."
        )


def backward_and_step(accelerator: Accelerator, loss, model, optimizer, lr_scheduler, max_grad_norm: float = 0.0):
    """
    Stop on a non-finite loss (`stop_if_not_finite`), then backward and (inside `accelerator.accumulate(model)`) the
    optimizer and schedule steps, which Accelerate skips until the gradients are synced; gradients are clipped to
    `max_grad_norm` (0: not clipped) when they are.
    """
    stop_if_not_finite(accelerator, loss)
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
    Stamp validation metrics (already reduced over the processes, so the same on all) with the step and training
    time, add them to the history, log them to the trackers and write OUTPUT_DIR/metrics.json. Returns the entry.
    A NaN metric means the weights diverged: FloatingPointError, before anything is written.
    """
    not_numbers = sorted(name for name, value in metrics.items() if isinstance(value, float) and math.isnan(value))
    if not_numbers:
        raise FloatingPointError(f"Validation at step {state.step} gave NaN {not_numbers}: the weights diverged.")
    # Milliseconds: a short run's seconds must not round to 0.
    entry = {**metrics, "step": state.step, "train_seconds": round(state.train_seconds, 3)}
    state.history.append(entry)
    accelerator.log({name: value for name, value in entry.items() if name != "step"}, step=state.step)
    if accelerator.is_main_process:
        origin = {"started_from": state.started_from} if state.started_from is not None else {}
        write_json_atomic(output_dir / METRICS_FILE, {**entry, **origin, "history": state.history})
    return entry
