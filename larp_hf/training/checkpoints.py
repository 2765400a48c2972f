"""
Checkpoints of a run: saved by all processes together, found, verified and restored exactly. Their format on disk
(state files, manifest, lineage, recovery) is `checkpoint_format.py`'s, beside this file.
"""

import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.data_loader import SeedableRandomSampler, get_sampler
from accelerate.utils import DistributedType, gather_object
from accelerate.utils.deepspeed import DeepSpeedSchedulerWrapper

from ..atomic_files import remove_folder, write_json_atomic
from . import checkpoint_format
from .accelerator import first_error, writes_files
from .arguments import run_config
from .checkpoint_format import CheckpointError
from .fault_injection import fault_point
from .layout import CHECKPOINTS_DIR, output_overlap, resume_refusal, resumes_another_run
from .sharding import (
    first_non_finite,
    gather_model_state,
    gather_optimizer_state,
    load_model_state,
    load_optimizer_state,
)
from .state import TrainingState, capture_rng_state, restore_rng_state


def _model_of(accelerator: Accelerator, index: int) -> torch.nn.Module | None:
    """The model whose parameters the `index`-th optimizer steps, as Accelerate pairs them (by order of prepare)."""
    return accelerator._models[index] if index < len(accelerator._models) else None


def _training_state(accelerator: Accelerator) -> TrainingState:
    for obj in accelerator._custom_objects:
        if isinstance(obj, TrainingState):
            return obj
    raise RuntimeError("No TrainingState is registered: call resume_or_start_afresh before saving a checkpoint.")


def _schedulers(accelerator: Accelerator) -> list:
    """The prepared schedulers that checkpoints hold; a scheduler DeepSpeed runs is saved in DeepSpeed's own files."""
    return [s for s in accelerator._schedulers if not isinstance(s, DeepSpeedSchedulerWrapper)]


def _indexed(name: str, index: int) -> str:
    return name if index == 0 else f"{name}_{index}"


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, total_limit: int | None):
    """
    Save everything `resume_or_start_afresh` restores as OUTPUT_DIR/checkpoints/checkpoint-STEP, keeping the newest
    `total_limit` of this run's lineage. Nothing is pickled: weights, optimizer and random states go to safetensors,
    the rest to JSON; the manifest (sizes, SHA-256, step, lineage, config hash) is written last. The folder is written
    as `.tmp-checkpoint-STEP` and renamed into place, an older one of the same step renamed aside first and removed
    after. Refuses (FloatingPointError, on every process) to save non-finite weights or optimizer state.
    """
    state = _training_state(accelerator)
    checkpoints_dir = output_dir / CHECKPOINTS_DIR
    partial = checkpoint_format.partial_checkpoint_path(checkpoints_dir, step)
    final = checkpoints_dir / f"checkpoint-{step}"
    writes = writes_files(accelerator)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    fault_point("checkpoint.start")

    # Full states, gathered from the shards under FSDP (collectives: every process takes part).
    models = [gather_model_state(accelerator, model) for model in accelerator._models]
    optimizers = (
        []
        if deepspeed  # DeepSpeed keeps the optimizer partitions in its own files, written below
        else [gather_optimizer_state(accelerator, o, _model_of(accelerator, i)) for i, o in enumerate(accelerator._optimizers)]
    )
    error = None
    if writes:
        bad = first_non_finite(models, "model") or first_non_finite(optimizers, "optimizer")
        if bad:
            error = f"Refusing to save checkpoint-{step}: {bad} is not finite (NaN or infinite); training diverged."
    error = first_error(accelerator, error)
    if error:
        raise FloatingPointError(error)

    error = None
    try:
        if writes:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
    except OSError as failure:
        error = f"Could not create {partial}: {failure}"
    error = first_error(accelerator, error)  # the folder exists before anyone writes into it
    if error:
        raise SystemExit(f"error: {error}")

    try:
        checkpoint_format.write_state(partial, f"random_states_{accelerator.process_index}", capture_rng_state())
        if deepspeed:
            for index, model in enumerate(accelerator._models):
                model.save_checkpoint(str(partial / "deepspeed"), tag=_indexed("model", index), save_latest=False)
        if writes:
            for index, state_dict in enumerate(models):
                if state_dict is not None:
                    checkpoint_format.write_weights(partial / f"{_indexed('model', index)}.safetensors", state_dict)
            fault_point("checkpoint.model-written")
            for index, optimizer_state in enumerate(optimizers):
                checkpoint_format.write_state(partial, _indexed("optimizer", index), optimizer_state)
            for index, scheduler in enumerate(_schedulers(accelerator)):
                checkpoint_format.write_state(partial, _indexed("scheduler", index), scheduler.state_dict())
            if accelerator.scaler is not None:
                checkpoint_format.write_state(partial, "scaler", accelerator.scaler.state_dict())
            for index, obj in enumerate(accelerator._custom_objects):
                checkpoint_format.write_state(partial, f"custom_state_{index}", obj.state_dict())
            checkpoint_format.write_state(partial, "accelerator_state", _accelerator_state(accelerator))
            checkpoint_format.write_state(partial, "run_config", state.config)
        error = None
    except OSError as failure:
        error = f"Could not write checkpoint-{step} in {partial}: {failure}"
    error = first_error(accelerator, error)  # every process's files are written
    if error:
        raise SystemExit(f"error: {error}")
    fault_point("checkpoint.files-written")

    try:
        if writes:
            config_hash = checkpoint_format.config_sha256(state.config)
            checkpoint_format.write_manifest(partial, step, state.lineage, config_hash, accelerator.num_processes)
            fault_point("checkpoint.manifest-written")
            checkpoint_format.install_checkpoint(partial, final)
            if total_limit is not None and total_limit > 0:
                checkpoint_format.prune_checkpoints(checkpoints_dir, state.lineage, total_limit)
        error = None
    except OSError as failure:
        error = f"Could not finish checkpoint-{step} in {checkpoints_dir}: {failure}"
    error = first_error(accelerator, error)
    if error:
        raise SystemExit(f"error: {error}")


def _accelerator_state(accelerator: Accelerator) -> dict:
    """Accelerate's own counters: the accumulation step count and the seedable samplers' seed and epoch."""
    samplers = []
    for dataloader in accelerator._dataloaders:
        sampler = get_sampler(dataloader)
        seedable = isinstance(sampler, SeedableRandomSampler)
        samplers.append({"initial_seed": sampler.initial_seed, "epoch": sampler.epoch} if seedable else None)
    return {"step": accelerator.step, "samplers": samplers}


def _load_accelerator_state(accelerator: Accelerator, state: dict):
    accelerator.step = int(state["step"])
    for dataloader, saved in zip(accelerator._dataloaders, state["samplers"]):
        sampler = get_sampler(dataloader)
        if saved is not None and isinstance(sampler, SeedableRandomSampler):
            sampler.initial_seed, sampler.epoch = int(saved["initial_seed"]), int(saved["epoch"])


def find_latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """
    The newest checkpoint of the lineage of the run that owns OUTPUT_DIR (checkpoints_dir's parent), by its manifest;
    not verified (`resume_or_start_afresh` verifies the one it resumes from). Half-written, replaced and abandoned checkpoints are never picked.
    """
    head = checkpoint_format.read_head(checkpoints_dir.parent)
    return next(iter(checkpoint_format.lineage_checkpoints(checkpoints_dir, head)), None)


def resume_or_start_afresh(
    accelerator: Accelerator,
    resume_from_checkpoint: str | None,
    output_dir: Path,
    config: dict | None = None,
    resume_from_other_run: bool = False,
) -> TrainingState:
    """
    Call after `accelerator.prepare` (and after `claim_output_dir`). Returns a `TrainingState`, registered for
    checkpointing. With `resume_from_checkpoint` (`latest`, `latest_intact` or a folder), the checkpoint is verified
    against its manifest and everything it holds is restored, each file read only as the manifest lists it
    (`checkpoint_format.CheckpointReader`): weights, optimizer, schedule, random states, samplers and the state; a
    damaged one, or one whose manifest lacks a file this run needs, is refused (SystemExit naming the file) and no
    pickle is ever loaded. Without, old checkpoints in OUTPUT_DIR are deleted, so that `latest` can never pick one of
    another run. `config` (the run's settings, `run_config(args)`) is recorded in every checkpoint; a resume with other
    settings names them, applies a changed learning rate and other numeric optimizer settings (the schedule continues
    from where it was, at the new rate), and refuses weights that no longer fit the model, naming the settings.

    A checkpoint folder outside OUTPUT_DIR/checkpoints is another run's: it is refused unless
    `resume_from_other_run`, and then starts a new lineage in OUTPUT_DIR (its checkpoints replaced, as by a fresh
    start) whose `TrainingState.started_from` records the checkpoint, its step and its lineage. Interrupted saves of an
    earlier run are finished or undone first, and OUTPUT_DIR/run.json records this run's lineage, which `latest`
    follows from then on.
    """
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    state.config = run_config(config or {})
    checkpoints_dir = output_dir / CHECKPOINTS_DIR
    writes = writes_files(accelerator)
    run_id = checkpoint_format.new_run_id()
    refusal = resume_refusal(resume_from_checkpoint, output_dir, resume_from_other_run)
    if refusal is None and resume_from_other_run:  # deleting this folder's checkpoints must not delete the source
        refusal = output_overlap(output_dir, {"--resume_from_checkpoint": resume_from_checkpoint})
    if refusal:
        raise SystemExit(f"error: {refusal}")
    other_run = resumes_another_run(resume_from_checkpoint, output_dir)

    # Every file-writing process resolves the checkpoint on its own disk and verifies it; all must agree.
    found, error = None, None
    try:
        if writes:
            for note in checkpoint_format.recover_checkpoints_dir(checkpoints_dir):
                print(f"{checkpoints_dir}: {note}", file=sys.stderr)
        if writes and resume_from_checkpoint is not None:
            folder, manifest, notes = checkpoint_format.find_checkpoint(resume_from_checkpoint, checkpoints_dir)
            for note in notes:
                print(f"warning: {note}", file=sys.stderr)
            found = (str(folder), manifest["step"], manifest["lineage"])
        if writes and (resume_from_checkpoint is None or other_run) and checkpoints_dir.exists():
            remove_folder(checkpoints_dir)
    except CheckpointError as failure:
        error = f"{failure} Drop --resume_from_checkpoint to start from scratch."
    except OSError as failure:
        error = f"Could not prepare {checkpoints_dir}: {failure}"
    answers = [(found, error, run_id)] if accelerator.num_processes == 1 else gather_object([(found, error, run_id)])
    error = next((answer[1] for answer in answers if answer[1]), None)
    if error:
        raise SystemExit(f"error: {error}")
    run_id = answers[0][2]  # the main process's
    if resume_from_checkpoint is not None:
        resolved = [answer[0] for answer in answers if answer[0] is not None]
        if any(other[1:] != resolved[0][1:] for other in resolved):
            steps = sorted({other[1] for other in resolved})
            raise SystemExit(f"error: The nodes resolved {resume_from_checkpoint!r} to different steps {steps}.")
        writer = accelerator.process_index - accelerator.local_process_index if accelerator.project_configuration.save_on_each_node else 0
        folder, step, lineage = answers[writer][0]
        accelerator.print(f"Resuming from {folder}")
        try:
            applied = _load_checkpoint(accelerator, Path(folder), step, state.config)
        except CheckpointError as failure:
            raise SystemExit(f"error: {failure}") from None
        for note in applied:
            accelerator.print(note)
        if other_run:
            origin = {"checkpoint": str(Path(folder).resolve()), "step": step, "lineage": lineage}
            if state.started_from is not None:  # that run had itself started from a third one
                origin["started_from"] = state.started_from
            state.started_from = origin
            state.lineage = [{"run": run_id, "from_step": step}]
            accelerator.print(f"Started a new run in {output_dir} from {folder} (step {step}) of another run.")
        else:
            state.lineage = [*lineage, {"run": run_id, "from_step": step}]
    else:
        state.lineage = [{"run": run_id, "from_step": 0}]

    error = None
    if writes:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            record = {"lineage": state.lineage, "config": state.config}
            if state.started_from is not None:
                record["started_from"] = state.started_from
            write_json_atomic(output_dir / checkpoint_format.RUN_FILE, record)
        except OSError as failure:
            error = f"Could not write {output_dir / checkpoint_format.RUN_FILE}: {failure}"
    error = first_error(accelerator, error)
    if error:
        raise SystemExit(f"error: {error}")
    return state


def changed_settings(saved: dict, config: dict) -> list[str]:
    """The settings that differ between a checkpoint's run_config and this run's, as `name old -> new`."""
    return [
        f"{name} {saved.get(name)!r} -> {config.get(name)!r}"
        for name in sorted(set(saved) | set(config))
        if saved.get(name) != config.get(name)
    ]


def _load_checkpoint(accelerator: Accelerator, folder: Path, step: int, config: dict) -> list[str]:
    """
    Restore every prepared object, the registered states and this process's random state from `folder`, each file
    read as its manifest lists it and verified as it is read. Every file needed is looked up in the manifest before
    anything is loaded. Returns notes on the settings of this run applied over the checkpoint's.
    """
    reader = checkpoint_format.CheckpointReader(folder)
    if reader.manifest["step"] != step:
        raise CheckpointError(f"{folder / checkpoint_format.MANIFEST_FILE} changed while the run was resuming from it.")
    saved_config = reader.read_state("run_config")
    changed = changed_settings(saved_config, config)
    if changed:
        accelerator.print(f"Resuming with settings that differ from {folder.name}'s: {'; '.join(changed)}.")
    hint = f" (Settings that differ from the checkpoint's: {'; '.join(changed)}.)" if changed else ""

    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    model_files = [f"{_indexed('model', index)}.safetensors" for index in range(len(accelerator._models))]
    optimizer_stems = [_indexed("optimizer", index) for index in range(len(accelerator._optimizers))]
    for name in [] if deepspeed else model_files:  # DeepSpeed restores the weights from its own files
        reader.require(name, hint)
    stems = [] if deepspeed else list(optimizer_stems)
    stems += [_indexed("scheduler", index) for index in range(len(_schedulers(accelerator)))]
    stems += ["scaler"] if accelerator.scaler is not None else []
    stems += [f"custom_state_{index}" for index in range(len(accelerator._custom_objects))]
    stems += ["accelerator_state"]
    random_stem = f"random_states_{accelerator.process_index}"
    same_world = reader.manifest["world_size"] == accelerator.num_processes
    if same_world:
        stems.append(random_stem)
    for stem in stems:
        reader.require_state(stem, hint)
    if deepspeed:
        if saved_config.get("learning_rate") != config.get("learning_rate"):
            raise CheckpointError(
                f"{folder} was written with learning_rate {saved_config.get('learning_rate')!r}; under DeepSpeed a "
                "changed learning rate cannot be applied on resume. Resume with the checkpoint's learning rate."
            )
        reader.verify_folder("deepspeed")  # DeepSpeed opens these itself: every one listed and intact
        # DeepSpeed reads its own (pickled) partition files, checked against the manifest just now.
        for index, model in enumerate(accelerator._models):
            model.load_checkpoint(str(folder / "deepspeed"), tag=_indexed("model", index), load_lr_scheduler_states=False)
    else:
        fresh = _optimizer_settings(accelerator)  # as this run made them, before the checkpoint's replace them
        for model, name in zip(accelerator._models, model_files):
            try:
                load_model_state(accelerator, model, reader.read_weights(name))
            except (RuntimeError, ValueError, KeyError) as error:
                raise CheckpointError(_does_not_fit(folder / name, "weights", "model", error, changed)) from None
        for index, optimizer in enumerate(accelerator._optimizers):
            stem = optimizer_stems[index]
            try:
                load_optimizer_state(accelerator, optimizer, _model_of(accelerator, index), reader.read_state(stem))
            except (RuntimeError, ValueError, KeyError) as error:
                path = folder / reader.state_file(stem)
                raise CheckpointError(_does_not_fit(path, "optimizer state", "optimizer", error, changed)) from None
    for index, scheduler in enumerate(_schedulers(accelerator)):
        scheduler.load_state_dict(reader.read_state(_indexed("scheduler", index)))
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(reader.read_state("scaler"))
    for index, obj in enumerate(accelerator._custom_objects):
        obj.load_state_dict(reader.read_state(f"custom_state_{index}"))
    _load_accelerator_state(accelerator, reader.read_state("accelerator_state"))
    applied = [] if deepspeed else _apply_optimizer_settings(accelerator, fresh)

    if same_world:
        restore_rng_state(reader.read_state(random_stem))
    else:
        accelerator.print(
            f"warning: {folder} was written by {reader.manifest['world_size']} process(es), this run has "
            f"{accelerator.num_processes}: the batches and random draws differ from the run that wrote it."
        )
        if reader.lists_state(random_stem):
            restore_rng_state(reader.read_state(random_stem))
    return applied


def _does_not_fit(path: Path, what: str, target: str, error: Exception, changed: list[str]) -> str:
    """The refusal for a checkpoint's state that this run's model or optimizer cannot take, naming the settings."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else (lines[0] if lines else "")
    cause = (
        f"The settings that differ from the checkpoint's: {'; '.join(changed)}."
        if changed
        else "No recorded setting differs, so the code that builds the model changed since the save."
    )
    return (
        f"{path}: the {what} do not fit this run's {target} ({detail}). {cause} Resume with the settings the "
        "checkpoint was written with, or start a new run (without --resume_from_checkpoint)."
    )


def _inner_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside Accelerate's wrapper


def _optimizer_settings(accelerator: Accelerator) -> list[list[dict]]:
    """Each prepared optimizer's parameter-group settings (learning rate, weight decay, betas, ...), params left out."""
    return [
        [{key: value for key, value in group.items() if key != "params"} for group in _inner_optimizer(o).param_groups]
        for o in accelerator._optimizers
    ]


def _is_number(value) -> bool:
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_is_number(item) for item in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _apply_optimizer_settings(accelerator: Accelerator, fresh: list[list[dict]]) -> list[str]:
    """
    Put this run's numeric optimizer settings (`fresh`, as the run made them) over those a checkpoint restored, so a
    resume with a new learning rate, weight decay or betas trains with them, as the settings it records say. The
    learning rate is the schedule's base rate (`initial_lr`, what a transformers schedule scales): the current rate
    and the schedulers' `base_lrs` are scaled to it, so the schedule goes on from the step it had reached at the new
    rate. Switches (`fused`, `foreach`, ...) stay as the checkpoint has them. Returns a note per change.
    """
    notes, scales = [], {}
    for index, (optimizer, groups) in enumerate(zip(accelerator._optimizers, fresh)):
        inner = _inner_optimizer(optimizer)
        for number, (group, wanted) in enumerate(zip(inner.param_groups, groups)):
            where = f"parameter group {number}"
            if len(accelerator._optimizers) > 1:
                where = f"optimizer {index}, {where}"
            base_key = "initial_lr" if "initial_lr" in wanted else "lr"
            restored, asked = group.get(base_key, group["lr"]), wanted[base_key]
            if restored != asked:
                if not restored > 0:
                    raise CheckpointError(
                        f"The checkpoint's learning rate is {restored!r} in {where}: it cannot be scaled to {asked!r}."
                    )
                group["lr"] = group["lr"] * (asked / restored)
                group[base_key] = asked
                scales[(id(inner), number)] = asked
                notes.append(
                    f"Applied learning rate {asked!r} (was {restored!r}) in {where}: the schedule goes on at the new rate."
                )
            for key, value in wanted.items():
                if key not in ("lr", "initial_lr") and _is_number(value) and group.get(key) != value:
                    notes.append(f"Applied {key} {value!r} (was {group.get(key)!r}) in {where}.")
                    group[key] = value
    if scales:
        for scheduler in _schedulers(accelerator):
            inner = getattr(scheduler, "scheduler", scheduler)
            optimizer = getattr(inner, "optimizer", None)
            if hasattr(inner, "base_lrs"):
                inner.base_lrs = [
                    scales.get((id(optimizer), number), base) for number, base in enumerate(inner.base_lrs)
                ]
            if hasattr(inner, "_last_lr") and optimizer is not None:
                inner._last_lr = [group["lr"] for group in optimizer.param_groups]
    return notes
