"""What a finished run leaves: the final model, written atomically, and its metrics.json."""

import shutil
import tempfile
from pathlib import Path

import torch
from accelerate import Accelerator

from ..atomic_files import commit_file, write_json_atomic
from .accelerator import first_error
from .fault_injection import fault_point
from .layout import METRICS_FILE
from .sharding import check_weights_identical, first_non_finite, gather_model_state, is_sharded
from .state import TrainingState


def save_model(accelerator: Accelerator, model: torch.nn.Module, folder: Path, *processors):
    """
    Save a prepared model (and any processors) in `save_pretrained` format to `folder`. Call it on every process
    (the weights are gathered where they are sharded); the main process writes, also with save_on_each_node. The files are written beside
    `folder`'s and each renamed over its old one: at every moment each file is whole, old or new. Non-finite weights
    are refused (FloatingPointError on every process) and the folder is left as it was. Returns the unwrapped model.
    """
    folder = Path(folder)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    state_dict = gather_model_state(accelerator, model)
    error = None
    if state_dict is not None and (bad := first_non_finite(state_dict, "model")):
        error = f"Refusing to save the model to {folder}: {bad} is not finite (NaN or infinite); training diverged."
    error = first_error(accelerator, error)
    if error:
        raise FloatingPointError(error)
    try:
        # The main process alone: transformers' save_pretrained writes on the first process only, on every node.
        if accelerator.is_main_process:
            # Sharded weights are saved from the gathered copy; whole ones as transformers saves them.
            gathered = state_dict if is_sharded(accelerator, model) else None
            _save_pretrained_atomic(folder, [unwrapped, *processors], {unwrapped: gathered})
        error = None
    except OSError as failure:
        error = f"Could not save the model to {folder}: {failure}"
    error = first_error(accelerator, error)
    if error:
        raise SystemExit(f"error: {error}")
    return unwrapped


def _save_pretrained_atomic(folder: Path, parts: list, state_dicts: dict):
    # Not a folder swap: the folder may hold more than the model (OUTPUT_DIR holds the checkpoints and the lock).
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".tmp-save-*"):
        shutil.rmtree(leftover, ignore_errors=True)  # of a save that was killed
    partial = Path(tempfile.mkdtemp(prefix=".tmp-save-", dir=folder))
    try:
        for part in parts:
            state_dict = state_dicts.get(part)
            part.save_pretrained(partial, **({"state_dict": state_dict} if state_dict is not None else {}))
        for name in sorted(path.relative_to(partial) for path in partial.rglob("*") if path.is_file()):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            commit_file(partial / name, folder / name)
            fault_point("model.file-replaced")
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def save_final_model(accelerator: Accelerator, model: torch.nn.Module, output_dir: Path, *processors):
    """
    Check that every process ends with the same weights, then save them (and any processors) once, in
    `save_pretrained` format, file by file atomically (`save_model`). Returns the unwrapped model.
    """
    check_weights_identical(accelerator, model)
    return save_model(accelerator, model, output_dir, *processors)


def write_final_metrics(output_dir: Path, state: TrainingState, **extra) -> dict:
    """
    OUTPUT_DIR/metrics.json of a finished run: the last validation at the top level (also when a resumed run had
    nothing left to train), the step count, the training time, `extra`, where a run started from another run's
    checkpoint came from (`started_from`) and the history. Returns what it wrote.
    """
    latest = state.history[-1] if state.history else {}
    final = {**latest, "step": state.step, "train_seconds": round(state.train_seconds, 3), **extra}
    if state.started_from is not None:
        final["started_from"] = state.started_from
    final["history"] = state.history
    write_json_atomic(output_dir / METRICS_FILE, final)
    return final
