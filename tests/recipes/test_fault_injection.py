"""
Faults a training run must survive or refuse, each with its exact outcome: kill -9 at exact points of every save
(LARP_HF_KILL_AT) and at random moments, damaged, missing and planted checkpoint files, concurrent runs on one folder,
and bad inputs. "Resumed bit-exactly" means the final weights equal those of a run that was never interrupted;
"refused" means a non-zero exit whose message names the file or the holder, with nothing changed on disk.

The runs are tests/recipes/tiny_training.py's miniature recipe (the recipes' larp_hf.training calls around a tiny
GPT-2), forked from a preloaded server so that each starts in well under a second.
"""

import hashlib
import json
import os
import pickle
import random
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from larp_hf import training
from larp_hf.training import checkpoint_format

from .forked_runs import free_port
from .test_train_vqvae import import_recipe, tiny_config, train_vqvae  # noqa: F401 (a fixture)
from .tiny_training import start_in_child


MAX_STEPS = 6


class Run:
    def __init__(self, process, log: Path):
        self.process, self.log = process, log

    def wait(self, timeout: float = 60) -> "Run":
        self.process.join(timeout)
        assert self.process.exitcode is not None, f"still running after {timeout} s:\n{self.output}"
        return self

    @property
    def exitcode(self) -> int:
        return self.process.exitcode

    @property
    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def start(tmp_path: Path, name: str, kill_at: str | None = None, environment: dict | None = None, cwd=None, **options):
    options.setdefault("output_dir", str(tmp_path / "out"))
    options.setdefault("max_steps", MAX_STEPS)
    environment = {**(environment or {}), **({"LARP_HF_KILL_AT": kill_at} if kill_at else {})}
    log = tmp_path / f"{name}.log"
    return Run(start_in_child(options, log, environment, cwd), log)


def train(tmp_path: Path, name: str, **options) -> Run:
    return start(tmp_path, name, **options).wait()


def succeeds(run: Run) -> Run:
    assert run.exitcode == 0, run.output[-3000:]
    return run


def refused(run: Run, *fragments: str) -> str:
    assert run.exitcode not in (0, -9), run.output[-3000:]
    for fragment in fragments:
        assert fragment in run.output, f"{fragment!r} not in:\n{run.output[-3000:]}"
    return run.output


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(resumed: Path, expected: dict[str, torch.Tensor]):
    found = weights(resumed)
    assert found.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(found[name], tensor), f"{name} differs from the uninterrupted run's"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (the lock aside) with its SHA-256: 'nothing changed on disk' compares two."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "run.lock"
    }


def hidden_leftovers(output_dir: Path) -> list[str]:
    checkpoints = output_dir / "checkpoints"
    return sorted(p.name for p in checkpoints.iterdir() if p.name.startswith(".")) if checkpoints.exists() else []


def world(processes: int, port: int, rank: int, local: bool = True) -> dict:
    """torchrun's environment for one of `processes` gloo CPU processes; local=False: each one a node of its own."""
    return {
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(processes),
        "LOCAL_RANK": str(rank if local else 0), "LOCAL_WORLD_SIZE": str(processes if local else 1),
        "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
    }  # fmt: skip


def start_world(tmp_path, name, processes=2, local=True, cwds=None, **options) -> list[Run]:
    port = free_port()
    return [
        start(tmp_path, f"{name}-{rank}", environment=world(processes, port, rank, local), cwd=cwds and cwds[rank], **options)
        for rank in range(processes)
    ]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """A run never interrupted: MAX_STEPS steps, a checkpoint after each (all kept). Tests copy it, never change it."""
    folder = tmp_path_factory.mktemp("straight")
    succeeds(train(folder, "straight"))
    return folder / "out"


@pytest.fixture(scope="module")
def expected(straight) -> dict[str, torch.Tensor]:
    return weights(straight)


def copy_of(straight: Path, tmp_path: Path, *checkpoints: int) -> Path:
    """A folder holding the straight run's listed checkpoints only, as a run interrupted after the last would."""
    output_dir = tmp_path / "out"
    for step in checkpoints:
        shutil.copytree(straight / "checkpoints" / f"checkpoint-{step}", output_dir / "checkpoints" / f"checkpoint-{step}")
    shutil.copy(straight / "run.json", output_dir / "run.json")
    return output_dir


# ---- kill -9 in the middle of a save -----------------------------------------------------------------------------

# (kill point, the checkpoint the next `latest` must resume from) for a kill during the save of step 3.
SAVE_KILLS = [
    ("checkpoint.start#3", 2),  # before anything was written
    ("checkpoint.model-written#3", 2),  # .tmp-checkpoint-3 holds the weights only
    ("checkpoint.files-written#3", 2),  # every file written, no manifest
    ("checkpoint.manifest-written#3", 2),  # complete, but never renamed into place
    ("checkpoint.installed#3", 3),  # in place
]


@pytest.mark.parametrize(("kill_at", "resumed_from"), SAVE_KILLS, ids=[k for k, _ in SAVE_KILLS])
def test_a_kill_during_a_save_resumes_bit_exactly_from_the_last_complete_checkpoint(kill_at, resumed_from, tmp_path, expected):
    assert train(tmp_path, "killed", kill_at=kill_at).exitcode == -9
    resumed = succeeds(train(tmp_path, "resumed", resume_from_checkpoint="latest"))
    assert f"Resuming from {tmp_path / 'out' / 'checkpoints' / f'checkpoint-{resumed_from}'}" in resumed.output
    assert "Took over the stale lock" in resumed.output and "PID" in resumed.output
    assert_same_weights(tmp_path / "out", expected)
    assert hidden_leftovers(tmp_path / "out") == []


def test_a_kill_while_pruning_never_leaves_a_half_deleted_checkpoint(tmp_path, expected):
    # With 2 kept, the save of step 3 removes checkpoint-1: it is renamed .deleting-checkpoint-1 before removal.
    assert train(tmp_path, "killed", kill_at="checkpoint.pruning#1", checkpoints_total_limit=2).exitcode == -9
    assert (tmp_path / "out" / "checkpoints" / ".deleting-checkpoint-1").exists()
    resumed = succeeds(train(tmp_path, "resumed", resume_from_checkpoint="latest", checkpoints_total_limit=2))
    assert "checkpoint-3" in resumed.output and "removed the interrupted .deleting-checkpoint-1" in resumed.output
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["checkpoint-5", "checkpoint-6"]
    assert_same_weights(tmp_path / "out", expected)


def test_a_kill_while_the_final_model_is_replaced_leaves_whole_files(tmp_path, expected):
    assert train(tmp_path, "killed", kill_at="model.file-replaced#1").exitcode == -9
    output_dir = tmp_path / "out"
    assert json.loads((output_dir / "checkpoints" / "checkpoint-6" / "manifest.json").read_text())["step"] == 6
    resumed = succeeds(train(tmp_path, "resumed", resume_from_checkpoint="latest"))
    assert "checkpoint-6" in resumed.output  # nothing left to train: the final model is saved again
    assert_same_weights(output_dir, expected)
    assert not list(output_dir.glob(".tmp-save-*"))


@pytest.mark.parametrize("kill_at", ["checkpoint.old-moved-aside#1", "checkpoint.installed#1"])
def test_a_kill_while_a_resumed_run_replaces_a_checkpoint(kill_at, tmp_path, straight, expected):
    # A finished run resumed from checkpoint-2: its save of step 3 replaces the old checkpoint-3.
    output_dir = tmp_path / "out"
    shutil.copytree(straight, output_dir)
    branch = str(output_dir / "checkpoints" / "checkpoint-2")
    assert train(tmp_path, "killed", kill_at=kill_at, resume_from_checkpoint=branch).exitcode == -9
    resumed = succeeds(train(tmp_path, "resumed", resume_from_checkpoint="latest"))
    # Interrupted before the new checkpoint-3 was in place, the old one comes back, but on the abandoned branch.
    assert f"checkpoint-{2 if 'aside' in kill_at else 3}\n" in resumed.output
    assert "passed over checkpoint-6: on an abandoned branch" in resumed.output
    assert_same_weights(output_dir, expected)
    assert hidden_leftovers(output_dir) == []


def test_a_kill_while_overwriting_keeps_the_old_run_whole_beside_the_folder(tmp_path, straight, expected):
    output_dir = tmp_path / "out"
    shutil.copytree(straight, output_dir)
    before = snapshot(output_dir)
    assert train(tmp_path, "killed", kill_at="overwrite.old-moved-aside#1", overwrite_output_dir=True).exitcode == -9
    (aside,) = tmp_path.glob(".old-out-*")
    assert snapshot(aside) == before
    succeeds(train(tmp_path, "again", overwrite_output_dir=True))
    assert not list(tmp_path.glob(".old-out-*")) and not list(tmp_path.glob(".tmp-out-*"))
    assert_same_weights(output_dir, expected)


def test_kills_at_random_moments_resume_bit_exactly(tmp_path, expected):
    """Genuinely random: kill -9 after a random delay, whatever the run is doing; every resume must be exact."""
    seed = int.from_bytes(os.urandom(4), "little")
    delays = random.Random(seed).sample(range(5, 95), 4)  # percent of an uninterrupted run's duration
    (tmp_path / "timing").mkdir()
    began = time.perf_counter()
    succeeds(train(tmp_path / "timing", "timing"))
    duration = time.perf_counter() - began
    for attempt, percent in enumerate(delays):
        folder = tmp_path / f"attempt-{attempt}"
        folder.mkdir()
        run_ = start(folder, "killed")
        time.sleep(duration * percent / 100)
        run_.process.kill()  # SIGKILL
        run_.wait()
        note = f"seed {seed}, killed at {percent}% of the run (exit {run_.exitcode}):\n{run_.output[-2000:]}"
        # Killed before its first checkpoint, a run is started again; after, it is resumed.
        has_checkpoint = any((folder / "out" / "checkpoints").glob("checkpoint-*"))
        resume = "latest" if has_checkpoint else None
        resumed = train(folder, "resumed", resume_from_checkpoint=resume, overwrite_output_dir=not has_checkpoint)
        assert resumed.exitcode == 0, f"{note}\n--- resume:\n{resumed.output[-3000:]}"
        assert_same_weights(folder / "out", expected)
        assert hidden_leftovers(folder / "out") == [], note


# ---- damaged, missing and planted files --------------------------------------------------------------------------


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_bit(path: Path):
    data = bytearray(path.read_bytes())
    data[-9] ^= 0x04  # in the last tensor's bytes: the file still parses
    path.write_bytes(bytes(data))


DAMAGE = [
    ("model.safetensors", truncate, "model.safetensors is damaged: "),
    ("model.safetensors", flip_a_bit, "model.safetensors is damaged: its SHA-256 differs"),
    ("optimizer.safetensors", flip_a_bit, "optimizer.safetensors is damaged: its SHA-256 differs"),
    ("random_states_0.safetensors", truncate, "random_states_0.safetensors is damaged: "),
    ("random_states_0.safetensors", Path.unlink, "random_states_0.safetensors is missing"),
    ("custom_state_0.json", truncate, "custom_state_0.json is damaged: "),
    ("manifest.json", truncate, "manifest.json is damaged: it is not JSON"),
    ("manifest.json", Path.unlink, "has no manifest.json: its save never finished"),
]


@pytest.mark.parametrize(("name", "damage", "message"), DAMAGE, ids=[f"{d.__name__}-{n}" for n, d, _ in DAMAGE])
def test_a_damaged_checkpoint_is_refused_naming_the_file(name, damage, message, tmp_path, straight):
    output_dir = copy_of(straight, tmp_path, 2, 3)
    damage(output_dir / "checkpoints" / "checkpoint-3" / name)
    before = snapshot(output_dir)
    refused(train(tmp_path, "resume", resume_from_checkpoint="latest"), message, "checkpoint-3", "latest_intact")
    assert snapshot(output_dir) == before


def test_latest_intact_falls_back_past_a_damaged_checkpoint_and_says_so(tmp_path, straight, expected):
    output_dir = copy_of(straight, tmp_path, 2, 3)
    flip_a_bit(output_dir / "checkpoints" / "checkpoint-3" / "model.safetensors")
    resumed = succeeds(train(tmp_path, "resume", resume_from_checkpoint="latest_intact"))
    assert "passed over checkpoint-3: " in resumed.output and "model.safetensors is damaged" in resumed.output
    assert "Resuming from " in resumed.output and "checkpoint-2\n" in resumed.output
    assert_same_weights(output_dir, expected)


def test_a_damaged_checkpoint_named_by_its_path_is_refused_without_fallback(tmp_path, straight):
    output_dir = copy_of(straight, tmp_path, 2, 3)
    flip_a_bit(output_dir / "checkpoints" / "checkpoint-2" / "model.safetensors")
    refused(
        train(tmp_path, "resume", resume_from_checkpoint=str(output_dir / "checkpoints" / "checkpoint-2")),
        "checkpoint-2/model.safetensors is damaged",
    )


class Exploit:
    """Unpickling this runs `touch MARKER`: what a crafted custom_checkpoint_0.pkl did to the old resume."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickles_are_never_loaded_and_resume_stays_exact(tmp_path, straight, expected):
    output_dir = copy_of(straight, tmp_path, 2)
    marker = tmp_path / "pwned"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
        (output_dir / "checkpoints" / "checkpoint-2" / name).write_bytes(pickle.dumps(Exploit(marker)))
    resumed = succeeds(train(tmp_path, "resume", resume_from_checkpoint="latest"))
    assert not marker.exists()
    assert "custom_checkpoint_0.pkl: not in the manifest, never read" in resumed.output
    assert_same_weights(output_dir, expected)


def test_a_checkpoint_of_the_pickling_format_is_refused_unread(tmp_path):
    legacy = tmp_path / "out" / "checkpoints" / "checkpoint-2"
    legacy.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin"):
        (legacy / name).write_bytes(b"0")
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (legacy / name).write_bytes(pickle.dumps(Exploit(marker)))
    before = snapshot(tmp_path / "out")
    refused(train(tmp_path, "resume", resume_from_checkpoint="latest"), "written by an older larp_hf", "pickled state")
    assert not marker.exists() and snapshot(tmp_path / "out") == before


def test_latest_follows_the_current_lineage_never_an_abandoned_branch(tmp_path, straight):
    # The finished run is resumed from checkpoint-2 with new settings; it saves checkpoint-3 (replacing the old
    # one) and is killed while saving checkpoint-4. The old branch's checkpoint-4..6 are newer, but abandoned.
    output_dir = tmp_path / "out"
    shutil.copytree(straight, output_dir)
    branch = str(output_dir / "checkpoints" / "checkpoint-2")
    killed = train(tmp_path, "branch", kill_at="checkpoint.start#2", resume_from_checkpoint=branch, learning_rate=3e-3)
    assert killed.exitcode == -9 and "Resuming with settings that differ from checkpoint-2's: learning_rate" in killed.output
    latest = training.find_latest_checkpoint(output_dir / "checkpoints")
    assert latest.name == "checkpoint-3"
    lineage = checkpoint_format.read_manifest(latest)["lineage"]
    assert len(lineage) == 2 and lineage[1]["from_step"] == 2
    assert checkpoint_format.read_manifest(output_dir / "checkpoints" / "checkpoint-4")["lineage"] == lineage[:1]
    resumed = succeeds(train(tmp_path, "resumed", resume_from_checkpoint="latest", learning_rate=3e-3))
    assert "checkpoint-3\n" in resumed.output and "passed over checkpoint-4: on an abandoned branch" in resumed.output
    assert json.loads((output_dir / "metrics.json").read_text())["step"] == MAX_STEPS


def test_a_finished_run_extended_to_more_steps_matches_a_longer_run(tmp_path):
    # The 6-step run validates at its last step, which the 8-step run does not: validation must not move the RNG.
    longer = tmp_path / "longer"
    longer.mkdir()
    succeeds(train(longer, "longer", max_steps=8, validation_steps=4))
    succeeds(train(tmp_path, "finished", max_steps=6, validation_steps=4))
    extended = succeeds(train(tmp_path, "extended", max_steps=8, validation_steps=4, resume_from_checkpoint="latest"))
    assert "Resuming with settings that differ from checkpoint-6's: max_steps 6 -> 8." in extended.output
    assert_same_weights(tmp_path / "out", weights(longer / "out"))
    history = json.loads((tmp_path / "out" / "metrics.json").read_text())["history"]
    assert [entry["step"] for entry in history] == [4, 6, 8]


# ---- concurrent runs on one folder -------------------------------------------------------------------------------


def test_a_second_run_on_a_live_folder_is_refused_naming_the_holder(tmp_path, expected):
    output_dir = tmp_path / "out"
    first = start(tmp_path, "first", step_sleep=0.5)
    while not (output_dir / "run.lock").exists() or "step 1" not in first.output:
        time.sleep(0.05)
    holder = f"PID {first.process.pid} on {socket.gethostname()}"
    before = snapshot(output_dir / "checkpoints")
    for name, flags in [
        ("fresh", {}),
        ("overwrite", {"overwrite_output_dir": True}),
        ("resume", {"resume_from_checkpoint": "latest"}),
    ]:
        refused(train(tmp_path, name, **flags), "is in use by another run", holder)
    assert snapshot(output_dir / "checkpoints").items() >= before.items()  # the live run's checkpoints are whole
    succeeds(first.wait())
    assert_same_weights(output_dir, expected)
    assert not (output_dir / "run.lock").exists()


def test_two_runs_started_together_one_trains_the_other_is_refused(tmp_path, expected):
    runs = [start(tmp_path, f"run-{i}") for i in range(2)]
    for run_ in runs:
        run_.wait()
    assert sorted(run_.exitcode == 0 for run_ in runs) == [False, True], [r.output[-1500:] for r in runs]
    loser = next(run_ for run_ in runs if run_.exitcode != 0)
    assert "is in use by another run" in loser.output or "already holds a run" in loser.output, loser.output[-2000:]
    assert_same_weights(tmp_path / "out", expected)


def test_a_stale_lock_of_a_dead_run_is_taken_over_with_a_warning(tmp_path, expected):
    (tmp_path / "out").mkdir()
    stale = {"pid": 999999, "host": socket.gethostname(), "started": 0, "command": "recipes/train_prior.py"}
    (tmp_path / "out" / "run.lock").write_text(json.dumps(stale))
    run_ = succeeds(train(tmp_path, "run"))
    assert "Took over the stale lock" in run_.output and "PID 999999" in run_.output
    assert_same_weights(tmp_path / "out", expected)


def test_a_two_process_run_on_a_live_folder_is_refused_by_both_processes(tmp_path):
    first = start(tmp_path, "first", step_sleep=0.4)
    while "step 1" not in first.output:
        time.sleep(0.05)
    for rank in start_world(tmp_path, "second"):
        refused(rank.wait(), "is in use by another run", f"PID {first.process.pid}")
    succeeds(first.wait())


# ---- bad inputs --------------------------------------------------------------------------------------------------


def test_a_nan_loss_on_one_process_stops_every_process_before_anything_non_finite_is_saved(tmp_path):
    ranks = start_world(tmp_path, "nan", nan_at_step=3, nan_on=[1])
    for rank in ranks:
        refused(rank.wait(), "FloatingPointError: The training loss is not finite", "process(es) [1]")
    checkpoints = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-1", "checkpoint-2"] and not (tmp_path / "out" / "model.safetensors").exists()


def test_a_learning_rate_that_diverges_stops_with_an_error_and_saves_no_nan(tmp_path):
    refused(train(tmp_path, "diverge", learning_rate=1e12), "FloatingPointError")
    for checkpoint in (tmp_path / "out" / "checkpoints").glob("checkpoint-*"):
        assert all(torch.isfinite(t).all() for t in weights(checkpoint).values())
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("recipe", ["train_vqvae", "train_prior", "train_classifier"])
def test_every_recipe_refuses_a_folder_holding_another_runs_checkpoints(recipe, tmp_path, monkeypatch):
    (tmp_path / "out" / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    parse_args = import_recipe(recipe).parse_args
    required = ["--vqvae", "v"] if recipe == "train_prior" else []
    with pytest.raises(SystemExit):
        parse_args([*required, "--output_dir", "out"])
    assert parse_args([*required, "--output_dir", "out", "--resume_from_checkpoint", "latest"])
    assert parse_args([*required, "--output_dir", "out", "--overwrite_output_dir"])


def test_the_tokenizer_recipe_with_a_learning_rate_of_1e12_exits_non_zero_and_saves_no_tokenizer(tiny_config, tmp_path):
    output_dir = tmp_path / "out"
    flags = ["--config", tiny_config, "--output_dir", output_dir, "--max_steps", 3, "--learning_rate", 1e12]
    result = train_vqvae(*flags, expect_success=False)
    assert result.returncode != 0 and "FloatingPointError" in result.stderr, result.stderr[-2000:]
    assert not (output_dir / "model.safetensors").exists()
    for checkpoint in (output_dir / "checkpoints").glob("checkpoint-*"):
        assert all(torch.isfinite(t).all() for t in weights(checkpoint).values())


# ---- node-local disks --------------------------------------------------------------------------------------------


def test_checkpoints_on_node_local_disks_are_finished_and_resolved_on_every_node(tmp_path):
    """Two one-process 'nodes', each with a disk of its own (its working folder; `out` is relative to it)."""
    disks = [tmp_path / "node-0", tmp_path / "node-1"]
    for disk in disks:
        disk.mkdir()
    common = {"output_dir": "out", "save_on_each_node": True, "max_steps": 4}
    for rank in start_world(tmp_path, "first", local=False, cwds=disks, **common):
        succeeds(rank.wait())
    uninterrupted = weights(disks[0] / "out")
    for disk in disks:
        assert sorted(p.name for p in (disk / "out" / "checkpoints").iterdir()) == [f"checkpoint-{s}" for s in range(1, 5)]
        checkpoint_format.verify_checkpoint(disk / "out" / "checkpoints" / "checkpoint-4")
    # Each node resolves `latest` on its own disk; nodes that disagree stop together.
    shutil.rmtree(disks[1] / "out" / "checkpoints" / "checkpoint-4")
    for rank in start_world(tmp_path, "disagree", local=False, cwds=disks, resume_from_checkpoint="latest", **common):
        refused(rank.wait(), "resolved 'latest' to different steps [3, 4]")
    shutil.rmtree(disks[0] / "out" / "checkpoints" / "checkpoint-4")
    for rank in start_world(tmp_path, "resumed", local=False, cwds=disks, resume_from_checkpoint="latest", **common):
        assert "Resuming from out/checkpoints/checkpoint-3" in succeeds(rank.wait()).output
    assert_same_weights(disks[0] / "out", uninterrupted)  # the final model is the main process's, on its node
    for disk in disks:
        assert_same_weights(disk / "out" / "checkpoints" / "checkpoint-4", weights(disks[0] / "out" / "checkpoints" / "checkpoint-4"))
