"""The checkpoint format and the run lock (larp_hf.training.checkpoint_format, .run_lock), without an Accelerator."""

import json
import math
import random

import numpy as np
import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig
from safetensors.torch import load_file

from larp_hf import training
from larp_hf.atomic_files import write_json_atomic
from larp_hf.training import checkpoint_format
from larp_hf.training.checkpoint_format import CheckpointError
from larp_hf.training.run_lock import OutputDirBusyError, RunLock, held_lock

from .test_train_vqvae import ACCELERATE_CONFIGS


def test_states_round_trip_through_json_and_safetensors_without_pickle(tmp_path):
    optimizer_like = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}, 1: {"step": torch.tensor(3.0)}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None, "__odd": 1}],
        "best": math.inf,
        "seed": np.int64(7),
    }
    name = checkpoint_format.write_state(tmp_path, "optimizer", optimizer_like)
    assert name == "optimizer.safetensors"
    back = checkpoint_format.read_state(tmp_path, "optimizer")
    assert set(back["state"]) == {0, 1} and back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["state"][0]["exp_avg"], optimizer_like["state"][0]["exp_avg"])
    assert back["best"] == math.inf and back["seed"] == 7 and back["param_groups"][0]["__odd"] == 1

    assert checkpoint_format.write_state(tmp_path, "plain", {"history": [{"loss": 0.5}]}) == "plain.json"
    assert checkpoint_format.read_state(tmp_path, "plain") == {"history": [{"loss": 0.5}]}
    with pytest.raises(TypeError, match="without pickling it"):
        checkpoint_format.write_state(tmp_path, "bad", {"object": object()})


def test_random_states_round_trip_exactly(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    checkpoint_format.write_state(tmp_path, "random_states_0", training.capture_rng_state())
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    training.restore_rng_state(checkpoint_format.read_state(tmp_path, "random_states_0"))
    assert (random.random(), np.random.standard_normal()) == expected[:2] and torch.equal(torch.rand(3), expected[2])

    state = training.capture_rng_state()
    with training.preserve_random_state():
        torch.rand(5), random.random(), np.random.rand()
    after = training.capture_rng_state()
    assert torch.equal(after["torch"], state["torch"]) and after["python"] == state["python"]
    assert torch.equal(after["numpy"]["keys"], state["numpy"]["keys"])


def test_tied_weights_are_written_once_and_read_back_under_both_names(tmp_path):
    embedding = torch.randn(4, 2)
    state_dict = {"wte.weight": embedding, "lm_head.weight": embedding, "bias": torch.zeros(2)}
    checkpoint_format.write_weights(tmp_path / "model.safetensors", state_dict)
    assert set(load_file(tmp_path / "model.safetensors")) == {"wte.weight", "bias"}  # a plain safetensors file
    back = checkpoint_format.read_weights(tmp_path / "model.safetensors")
    assert set(back) == set(state_dict) and torch.equal(back["lm_head.weight"], embedding)


def make_checkpoint(folder, step, lineage):
    folder.mkdir(parents=True)
    checkpoint_format.write_state(folder, "custom_state_0", {"step": step})
    checkpoint_format.write_weights(folder / "model.safetensors", {"w": torch.full((2,), float(step))})
    return checkpoint_format.write_manifest(folder, step, lineage, "hash", world_size=1)


def test_the_manifest_names_the_damaged_missing_or_unlisted_file(tmp_path):
    folder = tmp_path / "checkpoint-1"
    manifest = make_checkpoint(folder, 1, [{"run": "a", "from_step": 0}])
    assert set(manifest["files"]) == {"custom_state_0.json", "model.safetensors"}
    assert checkpoint_format.verify_checkpoint(folder) == (checkpoint_format.read_manifest(folder), [])

    (folder / "planted.pkl").write_bytes(b"not read")
    assert checkpoint_format.verify_checkpoint(folder)[1] == ["planted.pkl"]
    (folder / "custom_state_0.json").write_text('{"step": 2}')  # same size, other bytes
    with pytest.raises(CheckpointError, match="custom_state_0.json is damaged: its SHA-256 differs"):
        checkpoint_format.verify_checkpoint(folder)
    (folder / "custom_state_0.json").unlink()
    with pytest.raises(CheckpointError, match="custom_state_0.json is missing"):
        checkpoint_format.verify_checkpoint(folder)
    (folder / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="is not a larp-hf-checkpoint/1 manifest"):
        checkpoint_format.verify_checkpoint(folder)


def test_latest_follows_the_lineage_in_run_json(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    first, second = {"run": "a", "from_step": 0}, {"run": "b", "from_step": 2}
    for step in (1, 2, 3, 4):
        make_checkpoint(checkpoints / f"checkpoint-{step}", step, [first])
    assert training.find_latest_checkpoint(checkpoints).name == "checkpoint-4"  # no run.json: every checkpoint counts
    # Run b resumed from checkpoint-2: a's checkpoint-3 and -4 are an abandoned branch.
    write_json_atomic(tmp_path / "run.json", {"lineage": [first, second]})
    assert training.find_latest_checkpoint(checkpoints).name == "checkpoint-2"
    folder, _, notes = checkpoint_format.find_checkpoint("latest", checkpoints)
    assert folder.name == "checkpoint-2" and "passed over checkpoint-4: on an abandoned branch" in notes[0]
    (checkpoints / "checkpoint-3").rename(checkpoints / ".old-checkpoint-3")
    make_checkpoint(checkpoints / ".tmp-checkpoint-3", 3, [first, second])
    (checkpoints / ".tmp-checkpoint-3").rename(checkpoints / "checkpoint-3")
    assert training.find_latest_checkpoint(checkpoints).name == "checkpoint-3"
    assert checkpoint_format.on_lineage([first, second], [first], 2) and not checkpoint_format.on_lineage([first, second], [first], 3)
    assert not checkpoint_format.on_lineage([first], [first, second], 3)


def test_recovery_finishes_or_undoes_interrupted_saves(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    lineage = [{"run": "a", "from_step": 0}]
    make_checkpoint(checkpoints / ".old-checkpoint-1", 1, lineage)  # replaced, never removed: its successor exists
    make_checkpoint(checkpoints / "checkpoint-1", 1, lineage)
    make_checkpoint(checkpoints / ".old-checkpoint-2", 2, lineage)  # renamed aside, the new one never arrived
    (checkpoints / ".tmp-checkpoint-3").mkdir()
    (checkpoints / ".deleting-checkpoint-0").mkdir()
    notes = checkpoint_format.recover_checkpoints_dir(checkpoints)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert "restored checkpoint-2, whose replacement never finished" in notes


def test_a_legacy_pickled_checkpoint_is_refused_by_name(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "custom_checkpoint_0.pkl").write_bytes(b"\x80")
    with pytest.raises(CheckpointError, match="older larp_hf: it holds pickled state \\(custom_checkpoint_0.pkl\\)"):
        checkpoint_format.find_checkpoint(str(tmp_path / "checkpoint-5"), tmp_path)


def test_the_run_lock_names_its_holder_and_takes_over_a_stale_one(tmp_path):
    lock = RunLock(tmp_path)
    assert lock.acquire() is None
    holder = json.loads((tmp_path / "run.lock").read_text())
    with pytest.raises(OutputDirBusyError, match=f"is in use by another run \\(PID {holder['pid']} on "):
        RunLock(tmp_path).acquire()  # a second open file description: refused, as another process would be
    assert held_lock(tmp_path) is lock  # a second run in this process, after the first, takes the folder over
    lock.release()
    assert not (tmp_path / "run.lock").exists() and held_lock(tmp_path) is None

    (tmp_path / "run.lock").write_text(json.dumps({"pid": 424242, "host": "elsewhere", "command": "train_prior.py"}))
    again = RunLock(tmp_path)
    warning = again.acquire()
    assert "Took over the stale lock" in warning and "PID 424242 on elsewhere" in warning
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] != 424242
    again.release()


def test_run_config_leaves_out_where_a_run_is_kept():
    import argparse

    args = argparse.Namespace(output_dir="a", resume_from_checkpoint="latest", learning_rate=0.1, model={"n": [1, 2]})
    assert training.run_config(args) == {"learning_rate": 0.1, "model": {"n": [1, 2]}}


@pytest.mark.parametrize("path", sorted(ACCELERATE_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_accelerate_configs_load_and_keep_full_state_checkpoints(path):
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_processes >= 1 and config.mixed_precision in ("no", "bf16")
    if config.fsdp_config:
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if config.deepspeed_config.get("zero_stage") == 3:
        assert config.deepspeed_config["zero3_save_16bit_model"] is True  # else the weights cannot be gathered
    if config.num_machines > 1:
        assert config.main_process_ip and config.num_processes % config.num_machines == 0
