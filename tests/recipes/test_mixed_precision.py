"""--mixed_precision auto: bf16 autocast on a CPU that does bf16 in hardware, else what `accelerate launch` was told."""

import json
import platform

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from larp_hf import training
from larp_hf.training import accelerator as training_accelerator

from .test_train_prior import train_prior


# The recipe runs train the tiny prior of tests/recipes/conftest.py's `prior_config_file`.


@pytest.mark.parametrize(
    "device, cpu_has_bf16, expected",
    [("cpu", True, "bf16"), ("cpu", False, None), ("cuda", True, None), ("cuda", False, None)],
)
def test_auto_is_bf16_only_on_a_cpu_that_does_bf16(device, cpu_has_bf16, expected, monkeypatch):
    monkeypatch.setattr(training_accelerator, "cpu_has_bf16", lambda: cpu_has_bf16)
    mixed_precision, reason = training.resolve_mixed_precision("auto", device)
    assert mixed_precision == expected
    assert reason.startswith("auto: ") and (device in reason or "CPU" in reason)


def test_explicit_choices_are_kept_and_others_refused(monkeypatch):
    monkeypatch.setattr(training_accelerator, "cpu_has_bf16", lambda: True)
    for choice in ("no", "bf16", None):
        assert training.resolve_mixed_precision(choice, "cpu")[0] == choice
    assert training.resolve_mixed_precision("fp16", "cuda")[0] == "fp16"  # on a CPU: refused (test_recipes_as_users_expect)
    for choice in ("fp8", "", "Auto"):
        with pytest.raises(ValueError, match="must be one of"):
            training.resolve_mixed_precision(choice, "cpu")


def test_cpu_has_bf16_needs_bf16_arithmetic_and_says_no_when_torch_cannot_tell(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not training.cpu_has_bf16()  # AVX-512 without BF16: oneDNN would emulate bf16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert training.cpu_has_bf16()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not training.cpu_has_bf16()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the private check
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert not training.cpu_has_bf16()


@pytest.fixture
def fresh_accelerate_state():
    """make_accelerator sets accelerate's process-wide state: start from none and leave none behind."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("cpu_has_bf16", [True, False])
def test_make_accelerator_autocasts_on_a_bf16_cpu_and_says_why(
    cpu_has_bf16, monkeypatch, tmp_path, capsys, fresh_accelerate_state
):
    monkeypatch.setattr(training_accelerator, "cpu_has_bf16", lambda: cpu_has_bf16)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    accelerator = training.make_accelerator(tmp_path / "run", seed=0, mixed_precision="auto")
    expected = "bf16" if cpu_has_bf16 else "no"
    assert accelerator.mixed_precision == expected
    assert f"Mixed precision: {expected} (auto: " in capsys.readouterr().out

    class AutocastProbe(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x, float(torch.is_autocast_enabled("cpu")))

    enabled = accelerator.prepare(AutocastProbe())(torch.zeros(2))
    assert enabled.dtype == torch.float32 and bool(enabled.all()) == cpu_has_bf16


@pytest.mark.slow
@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_resume_matches_an_uninterrupted_run_in_either_precision(mixed_precision, prior_config_file, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    common = ["--config", prior_config_file, "--lr_scheduler", "constant", "--max_train_samples", 24]
    common += ["--mixed_precision", mixed_precision]
    result = train_prior(*common, "--output_dir", straight, "--max_steps", 5)
    assert f"Mixed precision: {mixed_precision} (as asked)" in result.stdout
    train_prior(*common, "--output_dir", interrupted, "--max_steps", 4)
    train_prior(*common, "--output_dir", interrupted, "--max_steps", 5, "--resume_from_checkpoint", "latest")
    assert json.loads((interrupted / "metrics.json").read_text())["step"] == 5
    expected, resumed = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    for name in expected:
        assert expected[name].dtype == torch.float32  # autocast computes in bf16; the weights stay float32
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0, msg=name)


def test_the_recipe_default_is_auto_and_reports_its_choice(prior_config_file, tmp_path):
    result = train_prior("--config", prior_config_file, "--output_dir", tmp_path / "auto", "--max_steps", 2)
    expected = "bf16" if training.cpu_has_bf16() else "no"
    assert f"Mixed precision: {expected} (auto: " in result.stdout
    fp32 = train_prior("--config", prior_config_file, "--output_dir", tmp_path / "fp32", "--max_steps", 2, "--mixed_precision", "no")
    assert "Mixed precision: no (as asked)" in fp32.stdout
    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("auto", "fp32")]
    differs = any(not torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert differs == (expected == "bf16")  # autocast changed the step's arithmetic, or there was none

