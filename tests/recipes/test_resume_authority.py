"""
What a resume may read, and what it continues: a checkpoint's manifest is the only list of what resuming reads
(each file verified as it is read, unlisted files never opened, a needed file the manifest lacks refused by name);
another run's checkpoint starts a new lineage only when asked to; changed settings are applied (the learning rate,
weight decay) or refused naming them (a model that no longer fits); YAML counts are integers.

The runs are a miniature recipe (the recipes' `larp_hf.training` calls around a one-layer GPT-2 with dropout, so that
every step draws random numbers) run in this process: a few steps take well under a second.
"""

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from larp_hf import training
from larp_hf.training import checkpoint_format, run_lock
from larp_hf.training.checkpoint_format import CheckpointError, CheckpointReader


MAX_STEPS = 4
WIDTHS = {"tiny": 16, "small": 32}  # the miniature's presets: only the width differs


def flags(output_dir: Path, **options) -> argparse.Namespace:
    values = {
        "config": None, "output_dir": str(output_dir), "overwrite_output_dir": False, "resume_from_checkpoint": None,
        "resume_from_other_run": False, "seed": 0, "max_steps": MAX_STEPS, "learning_rate": 1e-2,
        "lr_scheduler": "cosine", "weight_decay": 0.01, "preset": "tiny", "validation_steps": 2,
        "checkpointing_steps": 1, "checkpoints_total_limit": None, "gradient_accumulation_steps": 1,
        "mixed_precision": "no", "report_to": None, "save_on_each_node": False,
    }  # fmt: skip
    unknown = set(options) - set(values)
    assert not unknown, unknown
    return argparse.Namespace(**{**values, **options})


def collate(rows) -> dict:
    return {"input_ids": torch.stack([tokens for (tokens,) in rows])}


def train(output_dir: Path, inputs: dict | None = None, **options) -> dict:
    """One run, as recipes/train_*.py's main() makes it. Returns its state, the learning rate of each step and the
    optimizer's parameter groups at the end."""
    args = flags(output_dir, **options)
    accelerator = training.start_run(args, inputs=inputs)
    try:
        width = WIDTHS[args.preset]
        config = GPT2Config(
            n_layer=1, n_head=2, n_embd=width, vocab_size=32, n_positions=8, bos_token_id=0, eos_token_id=0,
            resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
        )  # fmt: skip
        model = GPT2LMHeadModel(config)
        tokens = torch.randint(0, 32, (40, 8), generator=torch.Generator().manual_seed(1))
        dataloader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(tokens), batch_size=4, shuffle=True, drop_last=True, collate_fn=collate,
            generator=torch.Generator().manual_seed(args.seed),
        )  # fmt: skip
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
        lr_scheduler = training.get_lr_scheduler(accelerator, args.lr_scheduler, optimizer, 0, args.max_steps)
        model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
        state = training.resume_or_start_afresh(
            accelerator, args.resume_from_checkpoint, Path(args.output_dir), config=training.run_config(args),
            resume_from_other_run=args.resume_from_other_run,
        )  # fmt: skip
        rates = {}
        model.train()
        state.start_clock()
        for batch in training.train_batches(accelerator, dataloader, state, args.max_steps):
            with accelerator.accumulate(model):
                rates[state.step + 1] = optimizer.param_groups[0]["lr"]
                loss = model(**batch, labels=batch["input_ids"]).loss
                training.backward_and_step(accelerator, loss, model, optimizer, lr_scheduler, max_grad_norm=1.0)
            state.count_step()
            if training.is_due(state.step, args.validation_steps, args.max_steps):
                training.record_validation(accelerator, state, {"val_loss": loss.item()}, Path(args.output_dir))
            if training.is_due(state.step, args.checkpointing_steps, args.max_steps):
                training.save_checkpoint(accelerator, Path(args.output_dir), state.step, args.checkpoints_total_limit)
        training.save_final_model(accelerator, model, Path(args.output_dir))
        training.write_final_metrics(Path(args.output_dir), state)
        groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        return {"state": state, "rates": rates, "groups": groups, "last_lr": lr_scheduler.get_last_lr()}
    finally:
        accelerator.end_training()
        run_lock.release_held_locks()


def refusal(output_dir: Path, **options) -> str:
    """The message of a run that stops (SystemExit) with an error."""
    with pytest.raises(SystemExit) as stopped:
        train(output_dir, **options)
    message = str(stopped.value.code)
    assert message.startswith("error: "), message
    return message


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(found: dict, expected: dict):
    assert found.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(found[name], tensor), f"{name} differs"


def snapshot(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "run.lock"
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """A run of MAX_STEPS steps with a checkpoint after each, never interrupted. Tests copy it, never change it."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    train(folder)
    return folder


def copy_run(straight: Path, to: Path, *steps: int) -> Path:
    """A folder holding the straight run's listed checkpoints only, as a run interrupted after the last would."""
    for step in steps:
        shutil.copytree(straight / "checkpoints" / f"checkpoint-{step}", to / "checkpoints" / f"checkpoint-{step}")
    shutil.copy(straight / "run.json", to / "run.json")
    return to


def edit_manifest(checkpoint: Path, edit):
    path = checkpoint / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


# ---- the manifest is the only list of what resuming reads -------------------------------------------------------


def test_a_state_file_planted_beside_the_listed_one_is_never_read(tmp_path, straight, capsys):
    folder = copy_run(straight, tmp_path / "run", 2)
    checkpoint = folder / "checkpoints" / "checkpoint-2"
    # What the old resume preferred: STEM.json over the listed STEM.safetensors. Read, this one would reset the
    # Adam moments and train at a rate of 1000.
    listed = checkpoint_format.read_state(checkpoint, "optimizer")
    planted = {"state": {}, "param_groups": [{**listed["param_groups"][0], "lr": 1000.0, "initial_lr": 1000.0}]}
    (checkpoint / "optimizer.json").write_text(json.dumps(checkpoint_format._encode(planted, {}, "optimizer")))
    (checkpoint / "scheduler.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    train(folder, resume_from_checkpoint="latest")
    assert "optimizer.json: not in the manifest, never read" in capsys.readouterr().err
    assert_same_weights(weights(folder), weights(straight))


@pytest.mark.parametrize(
    "name",
    [
        "model.safetensors",
        "optimizer.safetensors",
        "scheduler.json",
        "custom_state_0.json",
        "accelerator_state.json",
        "random_states_0.safetensors",
        "run_config.json",
    ],
)
def test_a_manifest_without_a_file_resuming_needs_is_refused_naming_it(name, tmp_path, straight):
    folder = copy_run(straight, tmp_path / "run", 2)
    checkpoint = folder / "checkpoints" / "checkpoint-2"
    edit_manifest(checkpoint, lambda manifest: manifest["files"].pop(name))
    before = snapshot(folder)
    message = refusal(folder, resume_from_checkpoint="latest")
    stem = name.split(".")[0]
    assert f"manifest.json does not list {stem}" in message and "restore the manifest the save wrote" in message
    assert snapshot(folder) == before  # the file on disk, verified or not, was never loaded; nothing was written


def test_a_listed_file_changed_after_the_check_is_refused_as_it_is_read(tmp_path, straight):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(straight / "checkpoints" / "checkpoint-2", checkpoint)
    reader = CheckpointReader(checkpoint)
    checkpoint_format.verify_checkpoint(checkpoint)
    state = json.loads((checkpoint / "custom_state_0.json").read_text())
    state["step"] = 9  # same length, other bytes
    (checkpoint / "custom_state_0.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="custom_state_0.json is damaged: its SHA-256 differs"):
        reader.read_state("custom_state_0")
    (checkpoint / "accelerator_state.json").unlink()
    with pytest.raises(CheckpointError, match="accelerator_state.json is missing"):
        reader.read_state("accelerator_state")


def test_the_reader_opens_only_what_the_manifest_lists(tmp_path, straight):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(straight / "checkpoints" / "checkpoint-2", checkpoint)
    reader = CheckpointReader(checkpoint)
    assert reader.state_file("optimizer") == "optimizer.safetensors" and reader.state_file("scaler") is None
    with pytest.raises(CheckpointError, match="does not list planted.safetensors, which resuming needs"):
        reader.read_weights("planted.safetensors")
    # A manifest that lists both forms of one state was edited: which one the save wrote cannot be told.
    shutil.copy(checkpoint / "custom_state_0.json", checkpoint / "custom_state_0.safetensors")
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"]["custom_state_0.safetensors"] = manifest["files"]["custom_state_0.json"]
    with pytest.raises(CheckpointError, match="lists both custom_state_0.json and custom_state_0.safetensors"):
        CheckpointReader(checkpoint, manifest).read_state("custom_state_0")
    with pytest.raises(CheckpointError, match="has both custom_state_0.json and custom_state_0.safetensors"):
        checkpoint_format.read_state(checkpoint, "custom_state_0")  # the unverified reader refuses to guess too
    manifest["files"]["../outside.json"] = manifest["files"].pop("custom_state_0.safetensors")
    with pytest.raises(CheckpointError, match="lists '../outside.json', which is not inside the checkpoint"):
        CheckpointReader(checkpoint, manifest).read_bytes("../outside.json")
    for files in ([], {"model.safetensors": {"bytes": "41", "sha256": "x"}}):
        edit_manifest(checkpoint, lambda manifest: manifest.update(files=files))
        with pytest.raises(CheckpointError, match="manifest.json is damaged: its `files` are not all"):
            CheckpointReader(checkpoint)


def test_a_folder_another_library_reads_must_be_wholly_listed(tmp_path):
    # DeepSpeed opens its partition files itself: every file under deepspeed/ must be listed and intact.
    checkpoint = tmp_path / "checkpoint-1"
    (checkpoint / "deepspeed" / "model").mkdir(parents=True)
    (checkpoint / "deepspeed" / "model" / "states.pt").write_bytes(b"listed")
    checkpoint_format.write_manifest(checkpoint, 1, [{"run": "a", "from_step": 0}], "hash", world_size=1)
    reader = CheckpointReader(checkpoint)
    reader.verify_folder("deepspeed")
    (checkpoint / "deepspeed" / "model" / "planted.pt").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="planted.pt is not in the manifest, but the library that reads"):
        reader.verify_folder("deepspeed")
    with pytest.raises(CheckpointError, match="does not list any file under other/"):
        reader.verify_folder("other")


# ---- another run's checkpoint: only when asked, and then a new lineage -----------------------------------------


def test_another_runs_checkpoint_is_refused_without_the_flag_and_nothing_changes(tmp_path, straight):
    other = tmp_path / "b"
    train(other, max_steps=2)  # run B, finished
    before, source = snapshot(other), snapshot(straight)
    message = refusal(other, resume_from_checkpoint=str(straight / "checkpoints" / "checkpoint-2"))
    assert "is a checkpoint of another run" in message and "--resume_from_other_run" in message
    assert f"--output_dir {straight}" in message  # or continue it in its own folder
    assert snapshot(other) == before and snapshot(straight) == source
    # With the flag a run in B is still only replaced when asked to.
    checkpoint = str(straight / "checkpoints" / "checkpoint-2")
    message = refusal(other, resume_from_checkpoint=checkpoint, resume_from_other_run=True)
    assert "already holds a run" in message and "--overwrite_output_dir" in message
    assert snapshot(other) == before


def test_resume_from_another_run_starts_a_new_lineage_that_records_its_origin(tmp_path, straight):
    source = snapshot(straight)
    origin = straight / "checkpoints" / "checkpoint-2"
    new = tmp_path / "new"
    result = train(new, resume_from_checkpoint=str(origin), resume_from_other_run=True)
    # Everything restored: it continues A's training bit-exactly, in its own folder, and leaves A as it was.
    assert_same_weights(weights(new), weights(straight))
    assert snapshot(straight) == source
    assert sorted(p.name for p in (new / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-4"]
    run = json.loads((new / "run.json").read_text())
    assert run["lineage"] == result["state"].lineage and len(run["lineage"]) == 1
    assert run["lineage"][0]["from_step"] == 2
    started_from = run["started_from"]
    assert started_from["checkpoint"] == str(origin.resolve()) and started_from["step"] == 2
    assert started_from["lineage"] == checkpoint_format.read_manifest(origin)["lineage"]
    assert json.loads((new / "metrics.json").read_text())["started_from"] == started_from
    # The record rides in its checkpoints: resuming B itself keeps it.
    train(new, resume_from_checkpoint=str(new / "checkpoints" / "checkpoint-3"))
    assert json.loads((new / "metrics.json").read_text())["started_from"] == started_from
    assert_same_weights(weights(new), weights(straight))


def test_resume_from_another_run_with_overwrite_replaces_the_old_run(tmp_path, straight):
    other = tmp_path / "b"
    train(other, max_steps=3, seed=5)
    train(other, overwrite_output_dir=True, resume_from_other_run=True,
          resume_from_checkpoint=str(straight / "checkpoints" / "checkpoint-3"))  # fmt: skip
    assert sorted(p.name for p in (other / "checkpoints").iterdir()) == ["checkpoint-4"]  # B's 1..3 are gone
    assert_same_weights(weights(other), weights(straight))


def test_a_checkpoint_folder_that_is_not_there_is_refused_before_any_work(tmp_path, capsys):
    from .test_train_vqvae import import_recipe

    missing = tmp_path / "a" / "checkpoints" / "checkpoint-4"
    with pytest.raises(SystemExit):
        import_recipe("train_vqvae").parse_args(
            ["--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", str(missing)]
        )
    assert f"No checkpoint to resume from at '{missing}': no such folder." in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("resume", ["latest", "own", None])
def test_the_flag_without_another_runs_checkpoint_is_refused(resume, tmp_path, straight):
    folder = copy_run(straight, tmp_path / "run", 2)
    resume = str(folder / "checkpoints" / "checkpoint-2") if resume == "own" else resume
    message = refusal(folder, resume_from_checkpoint=resume, resume_from_other_run=True)
    assert "--resume_from_other_run starts a new run from a checkpoint folder of another run" in message


def test_an_output_inside_the_other_runs_checkpoint_is_refused(tmp_path, straight):
    checkpoint = tmp_path / "a" / "checkpoints" / "checkpoint-2"
    shutil.copytree(straight / "checkpoints" / "checkpoint-2", checkpoint)
    for output in (checkpoint / "continued", tmp_path / "a" / "checkpoints"):
        message = refusal(output, resume_from_checkpoint=str(checkpoint), resume_from_other_run=True)
        assert "--resume_from_checkpoint" in message and "apart from its inputs" in message
    assert not (checkpoint / "continued").exists()


def test_the_library_refuses_another_runs_checkpoint_on_its_own(tmp_path, straight):
    accelerator = training.make_accelerator(tmp_path / "b", seed=0)
    checkpoint = str(straight / "checkpoints" / "checkpoint-2")
    with pytest.raises(SystemExit, match="is a checkpoint of another run"):
        training.resume_or_start_afresh(accelerator, checkpoint, tmp_path / "b")
    assert training.resumes_another_run(checkpoint, tmp_path / "b")
    assert not training.resumes_another_run(checkpoint, straight)
    assert not training.resumes_another_run("latest", tmp_path / "b") and not training.resumes_another_run(None, "x")


def test_recipes_take_the_flag_and_refuse_it_alone_at_parse_time(tmp_path, straight, monkeypatch, capsys):
    from .test_train_vqvae import import_recipe

    monkeypatch.chdir(tmp_path)
    parse_args = import_recipe("train_vqvae").parse_args
    checkpoint = str(straight / "checkpoints" / "checkpoint-2")
    with pytest.raises(SystemExit):
        parse_args(["--output_dir", "b", "--resume_from_checkpoint", checkpoint])
    assert "--resume_from_other_run to start a new run in b from it" in capsys.readouterr().err
    args = parse_args(["--output_dir", "b", "--resume_from_checkpoint", checkpoint, "--resume_from_other_run"])
    assert args.resume_from_other_run and "resume_from_other_run" not in training.run_config(args)


# ---- changed settings on resume: applied, or refused naming them ------------------------------------------------


def cosine_rates(learning_rate: float, steps: int) -> dict[int, float]:
    """The rate of each step of a run with the miniature's cosine schedule, started at `learning_rate`."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=learning_rate)
    one_process = argparse.Namespace(num_processes=1)
    schedule = training.get_lr_scheduler(one_process, "cosine", optimizer, 0, steps)
    rates = {}
    for step in range(1, steps + 1):
        rates[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
    return rates


def test_a_changed_learning_rate_on_resume_is_applied_and_recorded(tmp_path, straight, capsys):
    folder = copy_run(straight, tmp_path / "run", 2)
    result = train(folder, resume_from_checkpoint="latest", learning_rate=0.5, weight_decay=0.2)
    output = capsys.readouterr().out
    changed = "learning_rate 0.01 -> 0.5; weight_decay 0.01 -> 0.2"
    assert f"Resuming with settings that differ from checkpoint-2's: {changed}." in output
    assert "Applied learning rate 0.5 (was 0.01)" in output and "Applied weight_decay 0.2 (was 0.01)" in output
    # Steps 3 and 4 ran at the rates a run started at 0.5 has there: the schedule went on, at the new rate.
    expected = cosine_rates(0.5, MAX_STEPS)
    assert 0 < expected[4] < expected[3] < 0.5  # a flat schedule would pass by accident
    assert result["rates"] == {step: pytest.approx(expected[step], rel=1e-12) for step in (3, 4)}
    assert result["groups"][0]["initial_lr"] == 0.5 and result["groups"][0]["weight_decay"] == 0.2
    # What the checkpoints record is what was trained with.
    checkpoint = folder / "checkpoints" / "checkpoint-4"
    assert checkpoint_format.read_state(checkpoint, "run_config")["learning_rate"] == 0.5
    assert checkpoint_format.read_state(checkpoint, "scheduler")["base_lrs"] == [0.5]
    assert checkpoint_format.read_state(checkpoint, "optimizer")["param_groups"][0]["weight_decay"] == 0.2
    same = [torch.equal(tensor, weights(straight)[name]) for name, tensor in weights(folder).items()]
    assert not all(same)  # not the old rate's weights


def test_an_unchanged_resume_changes_nothing_it_restores(tmp_path, straight, capsys):
    folder = copy_run(straight, tmp_path / "run", 3)
    result = train(folder, resume_from_checkpoint="latest")
    assert "Applied" not in capsys.readouterr().out
    assert result["groups"][0]["initial_lr"] == 1e-2
    assert_same_weights(weights(folder), weights(straight))


def test_a_different_preset_on_resume_is_refused_naming_it(tmp_path, straight):
    folder = copy_run(straight, tmp_path / "run", 2)
    before = snapshot(folder)
    message = refusal(folder, resume_from_checkpoint="latest", preset="small")
    assert "model.safetensors: the weights do not fit this run's model (size mismatch for" in message
    assert "The settings that differ from the checkpoint's: preset 'tiny' -> 'small'." in message
    assert "Resume with the settings the checkpoint was written with" in message
    assert len(message.splitlines()) == 1  # one line, not torch's list of every mismatched tensor
    assert snapshot(folder) == before


@pytest.mark.parametrize("recipe", ["train_vqvae", "train_prior"])
@pytest.mark.parametrize("value", [2.7, 3.0, "2.7", "1e3", True])
def test_yaml_step_counts_must_be_integers(recipe, value, tmp_path, monkeypatch, capsys):
    from .test_train_vqvae import import_recipe

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"max_steps": value}))
    needs = ["--vqvae", "tokenizer"] if recipe == "train_prior" else []
    with pytest.raises(SystemExit) as exit_info:
        import_recipe(recipe).parse_args([*needs, "--config", str(path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "sets max_steps" in error and ("must be an integer" in error or "not a boolean" in error)
    path.write_text(yaml.safe_dump({"max_steps": 3}))
    assert import_recipe(recipe).parse_args([*needs, "--config", str(path)]).max_steps == 3

