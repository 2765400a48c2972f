"""
The parts of the training recipes that took debugging to get right, in one place. The recipes themselves stay
standalone scripts that read top to bottom (recipes/train_*.py) and call these as `training.NAME`:

- `arguments`: the flags every recipe shares and their checks, `--config` parsing, the start of a run, the
  train/validation splits, the settings trackers and checkpoints record;
- `accelerator`: the Accelerator (and its mixed precision, `auto` resolved), which processes write files, one error
  agreed on by all processes, the learning-rate schedule;
- `layout`: what a run's folder holds, and the run's claim on it (never among the run's inputs, never another
  run's checkpoints mixed in);
- `run_lock`: one run per output folder (OUTPUT_DIR/run.lock);
- `state`: the step count, time and validation history, and the random states, that a resume restores;
- `sharding`: whole model and optimizer states under FSDP, and the check that every process ends with the same weights;
- `checkpoints`: checkpoints saved by every process together and resumed exactly, verified first;
- `checkpoint_format`: a checkpoint on disk: state files, manifest, verification, the reader that resumes only
  through the manifest, lineage, recovery;
- `loop`: the batches, the optimizer step, the stop on a non-finite loss, the validation and checkpoint schedule;
- `saving`: the final model and metrics, written atomically;
- `fault_injection`: the points of the saves where tests kill the process.

Files are written whole or not at all through `larp_hf.atomic_files`.
"""

from .accelerator import (
    MIXED_PRECISION_CHOICES,
    cpu_has_bf16,
    get_lr_scheduler,
    make_accelerator,
    resolve_mixed_precision,
)
from .arguments import (
    add_mixed_precision_argument,
    add_run_arguments,
    add_split_arguments,
    add_step_arguments,
    check_run_arguments,
    held_out_size,
    non_negative_float,
    non_negative_int,
    parse_args_with_config,
    positive_float,
    positive_int,
    refuse_to_overwrite_a_run,
    run_config,
    select_splits,
    start_run,
    tracker_config,
)
from .checkpoints import find_latest_checkpoint, resume_or_start_afresh, save_checkpoint
from .layout import (
    CHECKPOINTS_DIR,
    METRICS_FILE,
    claim_output_dir,
    folder_holds_a_run,
    output_dir_refusal,
    output_overlap,
    resumes_another_run,
)
from .loop import (
    backward_and_step,
    is_due,
    optimizer_steps_per_epoch,
    record_validation,
    stop_if_not_finite,
    train_batches,
)
from .saving import save_final_model, save_model, write_final_metrics
from .sharding import check_weights_identical, gather_model_state
from .state import TrainingState, capture_rng_state, preserve_random_state, restore_rng_state


__all__ = [
    "CHECKPOINTS_DIR",
    "METRICS_FILE",
    "MIXED_PRECISION_CHOICES",
    "TrainingState",
    "add_mixed_precision_argument",
    "add_run_arguments",
    "add_split_arguments",
    "add_step_arguments",
    "backward_and_step",
    "capture_rng_state",
    "check_run_arguments",
    "check_weights_identical",
    "claim_output_dir",
    "cpu_has_bf16",
    "find_latest_checkpoint",
    "held_out_size",
    "folder_holds_a_run",
    "gather_model_state",
    "get_lr_scheduler",
    "is_due",
    "make_accelerator",
    "non_negative_float",
    "non_negative_int",
    "optimizer_steps_per_epoch",
    "output_dir_refusal",
    "output_overlap",
    "parse_args_with_config",
    "positive_float",
    "positive_int",
    "preserve_random_state",
    "record_validation",
    "refuse_to_overwrite_a_run",
    "resolve_mixed_precision",
    "restore_rng_state",
    "resumes_another_run",
    "resume_or_start_afresh",
    "run_config",
    "save_checkpoint",
    "save_final_model",
    "save_model",
    "select_splits",
    "start_run",
    "stop_if_not_finite",
    "tracker_config",
    "train_batches",
    "write_final_metrics",
]
