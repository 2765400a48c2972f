"""
The parts of the training recipes that took debugging to get right, in one place. The recipes themselves stay
standalone scripts that read top to bottom (recipes/train_*.py) and call these as `training.NAME`:

- `arguments`: the flags every recipe shares and their checks, `--config` parsing, the start of a run, the
  train/validation splits, the settings trackers and checkpoints record, a resume's model settings read from its
  checkpoint;
- `accelerator`: the Accelerator (and its mixed precision, `auto` resolved, fp16 on a CPU refused), its trackers
  (checked before the run, given the validation grids), which processes write files, one error agreed on by all
  processes, the learning-rate schedule;
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

from ..lazy_exports import lazy_exports


# Imported from their modules when first used (see larp_hf/lazy_exports.py).
_EXPORTS = {
    "CHECKPOINTS_DIR": ".layout",
    "DefaultsHelpFormatter": ".arguments",
    "FP16_ON_CPU": ".accelerator",
    "METRICS_FILE": ".layout",
    "MIXED_PRECISION_CHOICES": ".accelerator",
    "TrainingState": ".state",
    "add_mixed_precision_argument": ".arguments",
    "add_run_arguments": ".arguments",
    "add_split_arguments": ".arguments",
    "add_step_arguments": ".arguments",
    "backward_and_step": ".loop",
    "capture_rng_state": ".state",
    "check_run_arguments": ".arguments",
    "check_trackers": ".accelerator",
    "check_weights_identical": ".sharding",
    "checkpoint_settings": ".arguments",
    "claim_output_dir": ".layout",
    "cpu_has_bf16": ".accelerator",
    "find_latest_checkpoint": ".checkpoints",
    "folder_holds_a_run": ".layout",
    "gather_model_state": ".sharding",
    "held_out_size": ".arguments",
    "get_lr_scheduler": ".accelerator",
    "is_due": ".loop",
    "log_image": ".accelerator",
    "make_accelerator": ".accelerator",
    "non_negative_float": ".arguments",
    "non_negative_int": ".arguments",
    "optimizer_steps_per_epoch": ".loop",
    "output_dir_refusal": ".layout",
    "output_overlap": ".layout",
    "parse_args_with_config": ".arguments",
    "positive_float": ".arguments",
    "positive_int": ".arguments",
    "preserve_random_state": ".state",
    "record_validation": ".loop",
    "refuse_to_overwrite_a_run": ".arguments",
    "resolve_mixed_precision": ".accelerator",
    "restore_rng_state": ".state",
    "resume_or_start_afresh": ".checkpoints",
    "resumes_another_run": ".layout",
    "run_config": ".arguments",
    "save_checkpoint": ".checkpoints",
    "save_final_model": ".saving",
    "save_model": ".saving",
    "select_splits": ".arguments",
    "start_run": ".arguments",
    "stop_if_not_finite": ".loop",
    "take_recorded_dataset": ".arguments",
    "tracker_config": ".arguments",
    "trackers_take_images": ".accelerator",
    "train_batches": ".loop",
    "write_final_metrics": ".saving",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "CHECKPOINTS_DIR",
    "FP16_ON_CPU",
    "DefaultsHelpFormatter",
    "METRICS_FILE",
    "MIXED_PRECISION_CHOICES",
    "TrainingState",
    "add_mixed_precision_argument",
    "add_run_arguments",
    "add_split_arguments",
    "add_step_arguments",
    "backward_and_step",
    "capture_rng_state",
    "check_trackers",
    "checkpoint_settings",
    "check_run_arguments",
    "check_weights_identical",
    "claim_output_dir",
    "cpu_has_bf16",
    "find_latest_checkpoint",
    "held_out_size",
    "folder_holds_a_run",
    "gather_model_state",
    "get_lr_scheduler",
    "log_image",
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
    "take_recorded_dataset",
    "tracker_config",
    "trackers_take_images",
    "train_batches",
    "write_final_metrics",
]
