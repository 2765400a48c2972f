"""What a run's folder, OUTPUT_DIR, holds."""

from pathlib import Path


# A run's folder, OUTPUT_DIR, holds the final model, METRICS_FILE (the latest validation at the top level, every one
# under `history`) and CHECKPOINTS_DIR/checkpoint-STEP folders.
METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"


def folder_holds_a_run(output_dir: Path) -> bool:
    """Whether `output_dir` holds a run: its metrics.json or a checkpoint (a run.json alone holds nothing to lose)."""
    return (output_dir / METRICS_FILE).exists() or any((output_dir / CHECKPOINTS_DIR).glob("checkpoint-*"))


def _already_holds_a_run(output_dir: Path) -> str:
    return (
        f"{output_dir} already holds a run. Pass --resume_from_checkpoint latest to continue it, "
        "--overwrite_output_dir to replace it, or another --output_dir."
    )
