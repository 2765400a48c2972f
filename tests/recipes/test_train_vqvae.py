"""
The tokenizer recipe, run as users run it: `accelerate launch` in `test_launch_*[1]`, and otherwise the script's main
in processes of its own forked from a preloaded server (tests/recipes/forked_runs.py), one or two at a time.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

from larp_hf import LarpImageProcessor, LarpVQVAEModel, training

from .forked_runs import ROOT, free_port, import_recipe, run_recipe  # noqa: F401 (re-exported to other tests)


RECIPE = ROOT / "recipes" / "train_vqvae.py"
ACCELERATE_CONFIGS = ROOT / "recipes" / "accelerate_configs"


@pytest.fixture
def tiny_config(tmp_path, tiny_image_dataset_dir) -> Path:
    config = {
        "dataset": tiny_image_dataset_dir,
        "train_batch_size": 8,
        "eval_batch_size": 16,
        "learning_rate": 1e-3,
        "lr_warmup_steps": 0,
        "validation_steps": 1,
        "checkpointing_steps": 1,
        "num_grid_images": 8,
        "model": {
            "in_channels": 1,
            "image_size": 16,
            "hidden_channels": [8, 16],
            "stem_channels": 8,
            "num_res_blocks": 1,
            "res_hidden_channels": 8,
            "codebook_size": 16,
            "codebook_dim": 4,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(command: list[str], expect_success: bool = True) -> subprocess.CompletedProcess:
    """`command` in a fresh interpreter, as a user's shell runs it."""
    # ACCELERATE_USE_CPU makes Accelerate read torchrun's world as a gloo CPU world (else every rank runs alone).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "ACCELERATE_USE_CPU": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if expect_success:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def train_vqvae(*args, processes: int = 1, expect_success: bool = True) -> subprocess.CompletedProcess:
    """`python recipes/train_vqvae.py ARGS` (torchrun's world for processes=2), forked from the preloaded server."""
    return run_recipe("train_vqvae", *args, processes=processes, expect_success=expect_success)


def launcher(processes: int) -> list[str]:
    """`accelerate launch` for one CPU process; torchrun for two (accelerate's CPU launcher needs MPI for that)."""
    if processes == 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / "cpu.yaml")]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={free_port()}"]


def test_padded_images_come_back_at_their_own_size_and_psnr_is_measured_on_their_pixels(tiny_config, tmp_path):
    output_dir = tmp_path / "out"
    # 16×16 images padded into a 24×24 tokenizer input (a 6×6 grid), not stretched.
    train_vqvae(
        "--config", tiny_config, "--output_dir", output_dir, "--max_steps", "2", "--model.image_size", "24",
        "--pad_to_size", "--mixed_precision", "no",
    )  # fmt: skip
    processor = AutoImageProcessor.from_pretrained(output_dir)
    assert processor.do_pad and processor.native_size == {"height": 16, "width": 16}
    model = AutoModel.from_pretrained(output_dir).eval()

    # The recipe's PSNR is the one of the 16×16 pixels the dataset holds, not of the 24×24 padded inputs.
    config = yaml.safe_load(tiny_config.read_text())
    originals = list(datasets.load_from_disk(config["dataset"])["test"]["image"])
    pixels = torch.stack([torch.from_numpy(np.array(image)) for image in originals]).float()[:, None] / 255  # (N, 1, 16, 16)
    with torch.no_grad():
        decoded = model.decode(model.encode(processor(originals, return_tensors="pt")["pixel_values"]))
    reconstructions = processor.postprocess(decoded, output_type="pt")
    assert reconstructions.shape == pixels.shape
    psnr = 10 * math.log10(1 / (reconstructions.clamp(0, 1) - pixels).pow(2).mean().item())
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["val_psnr"] == pytest.approx(psnr, abs=0.05)
    with PIL.Image.open(output_dir / "reconstructions.png") as grid:  # 16-pixel images with 2-pixel borders
        assert grid.size == (8 * 18 + 2, 2 * 18 + 2)


@pytest.mark.parametrize("processes", [1, 2])
def test_launch_leaves_a_model_that_auto_classes_load(processes, tiny_config, tmp_path):
    output_dir = tmp_path / "out"
    flags = ["--config", tiny_config, "--output_dir", output_dir, "--max_steps", 2]
    if processes == 1:
        result = run([*launcher(processes), str(RECIPE), *map(str, flags)])
    else:  # torchrun itself is the prior's and the classifier's test
        result = train_vqvae(*flags, processes=processes)
    assert f"{processes} process(es) on cpu" in result.stdout
    # --mixed_precision auto by default: bf16 autocast on a CPU that does bf16 in hardware, whatever the launcher said.
    assert f"Mixed precision: {'bf16' if training.cpu_has_bf16() else 'no'} (auto: " in result.stdout

    model = AutoModel.from_pretrained(output_dir)
    assert isinstance(model, LarpVQVAEModel) and model.config.grid_size == 4
    assert bool(model.quantizer.initialized)
    processor = AutoImageProcessor.from_pretrained(output_dir)
    assert isinstance(processor, LarpImageProcessor) and processor.num_channels == 1
    codes = model.eval().encode(processor([PIL.Image.new("L", (28, 28), 200)], return_tensors="pt")["pixel_values"])
    assert codes.shape == (1, 4, 4)

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["step"] == 2
    assert 0 < metrics["val_psnr"] < 100 and 0 < metrics["codebook_usage"] <= 1
    assert metrics["train_seconds"] > 0 and metrics["num_parameters"] == model.num_parameters()
    assert [entry["step"] for entry in metrics["history"]] == [1, 2]
    # 8 originals over 8 reconstructions, 16-pixel images with 2-pixel borders.
    with PIL.Image.open(output_dir / "reconstructions.png") as grid:
        assert grid.size == (8 * 18 + 2, 2 * 18 + 2)
    assert (output_dir / "checkpoints" / "checkpoint-2").is_dir()


def test_resume_continues_exactly_where_it_stopped(tiny_config, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    # The interruption is simulated by a first run with --max_steps 3; a constant learning rate makes that the same
    # as 3 steps of a 5-step run (a decaying schedule depends on --max_steps). 24 examples in batches of 8 with 2
    # accumulation steps make epochs of 2 optimizer steps (the last one from a single batch), so the run stops in
    # the middle of the second epoch and the resumed one crosses into the third.
    common = ["--config", tiny_config, "--lr_scheduler", "constant", "--max_train_samples", 24]
    common += ["--gradient_accumulation_steps", 2]
    train_vqvae(*common, "--output_dir", straight, "--max_steps", 5)
    train_vqvae(*common, "--output_dir", interrupted, "--max_steps", 3)
    result = train_vqvae(*common, "--output_dir", interrupted, "--max_steps", 5, "--resume_from_checkpoint", "latest")
    assert "checkpoint-3" in result.stdout + result.stderr
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert metrics["step"] == 5
    assert [entry["step"] for entry in metrics["history"]] == [1, 2, 3, 4, 5]
    # Same batches, same flips, same codebook restarts: the weights match the run that was never interrupted.
    expected, resumed = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], msg=name)


def test_images_read_a_batch_at_a_time_in_workers_resume_exactly_and_train_as_the_in_memory_path(tiny_config, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    common = ["--config", tiny_config, "--lr_scheduler", "constant", "--max_train_samples", 24]
    common += ["--gradient_accumulation_steps", 2]
    # The uninterrupted run holds the pixels in memory; the interrupted one reads them from the dataset in 2 workers.
    train_vqvae(*common, "--output_dir", straight, "--max_steps", 5, "--pixels_in_memory", "always")
    streamed = [*common, "--output_dir", interrupted, "--pixels_in_memory", "never", "--dataloader_num_workers", 2]
    result = train_vqvae(*streamed, "--max_steps", 3)
    assert "read a batch at a time" in result.stdout
    result = train_vqvae(*streamed, "--max_steps", 5, "--resume_from_checkpoint", "latest")
    assert "checkpoint-3" in result.stdout + result.stderr
    expected, resumed = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], msg=name)
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (straight, interrupted)]
    assert metrics[1]["val_psnr"] == pytest.approx(metrics[0]["val_psnr"], rel=1e-6)
    with PIL.Image.open(straight / "reconstructions.png") as a, PIL.Image.open(interrupted / "reconstructions.png") as b:
        assert a.tobytes() == b.tobytes()


def test_a_streamed_dataset_resumes_exactly(tiny_config, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    # 24 streamed images in batches of 8 with 2 accumulation steps: epochs of 3 batches, 2 optimizer steps; the two
    # workers share 16 shards and yield 2 and 1 of each epoch's batches.
    common = ["--config", tiny_config, "--lr_scheduler", "constant", "--max_train_samples", 24, "--streaming"]
    common += ["--gradient_accumulation_steps", 2, "--dataloader_num_workers", 2]
    result = train_vqvae(*common, "--output_dir", straight, "--max_steps", 5)
    assert "24 training images an epoch, streamed" in result.stdout
    train_vqvae(*common, "--output_dir", interrupted, "--max_steps", 3)
    train_vqvae(*common, "--output_dir", interrupted, "--max_steps", 5, "--resume_from_checkpoint", "latest")
    expected, resumed = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], msg=name)
    assert [entry["step"] for entry in json.loads((interrupted / "metrics.json").read_text())["history"]] == [1, 2, 3, 4, 5]


def test_two_processes_train_on_a_stream(tiny_config, tmp_path):
    output_dir = tmp_path / "out"
    common = ["--config", tiny_config, "--output_dir", output_dir, "--streaming"]
    result = train_vqvae(*common, "--max_steps", 2, "--dataloader_num_workers", 1, processes=2)
    assert "2 process(es) on cpu" in result.stdout and "Parameters identical across 2 process(es)." in result.stdout
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["step"] == 2 and 0 < metrics["val_psnr"] < 100
    with PIL.Image.open(output_dir / "reconstructions.png") as grid:
        assert grid.size == (8 * 18 + 2, 2 * 18 + 2)


def test_half_written_checkpoints_are_never_resumed(tiny_config, tmp_path):
    output_dir = tmp_path / "out"
    common = ["--config", tiny_config, "--output_dir", output_dir, "--checkpoints_total_limit", 5]
    train_vqvae(*common, "--max_steps", 2)
    # A crash during the save of step 3 leaves only the temporary folder behind.
    (output_dir / "checkpoints" / ".tmp-checkpoint-3").mkdir()
    result = train_vqvae(*common, "--max_steps", 3, "--resume_from_checkpoint", "latest")
    assert "Resuming from" in result.stdout and "checkpoint-2" in result.stdout
    assert json.loads((output_dir / "metrics.json").read_text())["step"] == 3
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def test_bad_invocations_fail_with_clear_messages(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's relative default output_dir must not meet a run of the user's
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("max_stpes: 10\n")
    # argparse's errors, in this process: no recipe start-up to pay for.
    for argv, message in [
        (["--config", bad_yaml], "unknown options ['max_stpes']"),
        (["--config", tiny_config, "--model.codebok_size", 8], "unknown LarpVQVAEConfig fields ['codebok_size']"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            import_recipe("train_vqvae").parse_args([str(arg) for arg in argv])
        assert exit_info.value.code != 0 and message in capsys.readouterr().err

    missing = tmp_path / "missing"
    result = train_vqvae("--config", tiny_config, "--dataset", missing, "--output_dir", tmp_path / "x", expect_success=False)
    assert result.returncode == 2 and f"--dataset '{missing}' is not there: no such file or folder" in result.stderr

    fresh = ["--config", tiny_config, "--output_dir", tmp_path / "fresh", "--resume_from_checkpoint", "latest"]
    result = train_vqvae(*fresh, expect_success=False)
    assert result.returncode != 0 and "No checkpoint to resume from" in result.stderr


def test_a_finished_run_is_not_overwritten_by_accident(tiny_config, tmp_path):
    output_dir = tmp_path / "out"
    train_vqvae("--config", tiny_config, "--output_dir", output_dir, "--max_steps", 2)
    before = (output_dir / "model.safetensors").read_bytes()
    result = train_vqvae("--config", tiny_config, "--output_dir", output_dir, "--max_steps", 1, expect_success=False)
    assert result.returncode != 0 and "already holds a run" in result.stderr and "--overwrite_output_dir" in result.stderr
    assert (output_dir / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    # With the flag, the old run's checkpoints go too, so `latest` can never pick one of them up.
    train_vqvae("--config", tiny_config, "--output_dir", output_dir, "--max_steps", 1, "--overwrite_output_dir")
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["checkpoint-1"]


@pytest.mark.parametrize("config_path", sorted((ROOT / "recipes" / "configs").glob("vqvae_*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_parse_and_build_8x8_tokenizers(config_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs' relative output_dir must not meet a run of the user's
    train_vqvae = import_recipe("train_vqvae")
    args = train_vqvae.parse_args(["--config", str(config_path)])
    model = LarpVQVAEModel(train_vqvae.LarpVQVAEConfig(**args.model))
    assert model.config.grid_size == 8
    assert model.config.codebook_size <= 1024
    assert args.output_dir.startswith("outputs/")
