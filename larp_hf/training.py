"""
The parts of the training recipes that took debugging to get right, in one place: `--config` parsing, the Accelerator,
the claim on the output folder, learning-rate schedule and train/validation split set-up, exact resume (state,
batches, history), the validation and checkpoint schedule, checkpoints and final models that are written atomically
and verified on resume, the stop on a non-finite loss, and the check that every process ends with the same weights.
The recipes themselves stay standalone scripts that read top to bottom (recipes/train_*.py). The checkpoint format
is `larp_hf.checkpointing`'s; the folder lock is `larp_hf.run_lock`'s.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.data_loader import SeedableRandomSampler, get_sampler
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration, gather_object, set_seed
from accelerate.utils.deepspeed import DeepSpeedSchedulerWrapper
from torch.distributed.tensor import DTensor
from transformers import get_scheduler

from . import checkpointing
from .checkpointing import CheckpointError, fault_point, write_json_atomic
from .run_lock import OutputDirBusyError, RunLock, held_lock


# A run's folder, OUTPUT_DIR, holds the final model, METRICS_FILE (the latest validation at the top level, every one
# under `history`) and CHECKPOINTS_DIR/checkpoint-STEP folders.
METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"


def parse_args_with_config(parser: argparse.ArgumentParser, argv, model_config_class) -> argparse.Namespace:
    """
    Parse a recipe's flags in two passes: `--config x.yaml` sets their defaults, the command line overrides them.
    The YAML's `model:` mapping and `--model.FIELD VALUE` flags go to `args.model`, checked against the fields of
    `model_config_class` (a config class, or a function of the parsed args that returns one); unknown YAML keys, flags
    and fields are errors.
    """
    config_args, _ = parser.parse_known_args(argv)
    model_overrides = {}
    if config_args.config is not None:
        with open(config_args.config) as handle:
            file_config = yaml.safe_load(handle) or {}
        model_overrides.update(file_config.pop("model", None) or {})
        unknown = sorted(set(file_config) - {action.dest for action in parser._actions})
        if unknown:
            parser.error(f"{config_args.config} sets unknown options {unknown}; see --help for the valid ones.")
        parser.set_defaults(**file_config)
    args, rest = parser.parse_known_args(argv)
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--model.") or not rest:
            parser.error(f"unrecognized argument {flag!r}")
        model_overrides[flag[len("--model.") :]] = yaml.safe_load(rest.pop(0))
    if not isinstance(model_config_class, type):  # chosen by the parsed flags, e.g. the prior's --architecture
        model_config_class = model_config_class(args)
    unknown_fields = sorted(set(model_overrides) - {field.name for field in dataclasses.fields(model_config_class)})
    if unknown_fields:
        parser.error(f"unknown {model_config_class.__name__} fields {unknown_fields} (in `model:` or --model.FIELD).")
    args.model = model_overrides
    return args


def folder_holds_a_run(output_dir: Path) -> bool:
    """Whether `output_dir` holds a run: its metrics.json or a checkpoint (a run.json alone holds nothing to lose)."""
    return (output_dir / METRICS_FILE).exists() or any((output_dir / CHECKPOINTS_DIR).glob("checkpoint-*"))


def _already_holds_a_run(output_dir: Path) -> str:
    return (
        f"{output_dir} already holds a run. Pass --resume_from_checkpoint latest to continue it, "
        "--overwrite_output_dir to replace it, or another --output_dir."
    )


def refuse_to_overwrite_a_run(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """
    A folder that holds a run is continued or replaced explicitly, never by accident. An early check for
    `parse_args`; `claim_output_dir` checks again under the folder's lock.
    """
    output_dir = Path(args.output_dir)
    if folder_holds_a_run(output_dir) and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
        parser.error(_already_holds_a_run(output_dir))


def make_accelerator(
    output_dir: Path,
    seed: int,
    mixed_precision: str | None = None,
    gradient_accumulation_steps: int = 1,
    log_with: str | None = None,
    save_on_each_node: bool = False,
) -> Accelerator:
    """
    The recipes' `Accelerator`, with OUTPUT_DIR created (by the main process) and every random generator seeded.
    `mixed_precision=None` keeps what `accelerate launch` was told; trackers log to OUTPUT_DIR/logs.
    `save_on_each_node`: OUTPUT_DIR is on each node's own disk, so each node's local main process writes and finishes
    the checkpoints there (otherwise the main process alone writes, to a shared file system).
    """
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs"), save_on_each_node=save_on_each_node
        ),
        # Seedable sampler: the shuffle order is a function of (seed, epoch), so resuming replays the same batches.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if _writes_files(accelerator):
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    return accelerator


def _writes_files(accelerator: Accelerator) -> bool:
    """Whether this process writes the run's shared files: the main process, or each node's with save_on_each_node."""
    if accelerator.project_configuration.save_on_each_node:
        return accelerator.is_local_main_process
    return accelerator.is_main_process


def _first_error(accelerator: Accelerator, error: str | None) -> str | None:
    """The first process's error, on every process: a collective, so all processes go on or stop together."""
    if accelerator.num_processes == 1:
        return error
    return next((message for message in gather_object([error]) if message), None)


def claim_output_dir(accelerator: Accelerator, args: argparse.Namespace):
    """
    Make OUTPUT_DIR (`args.output_dir`) this run's for the run's life. The main process takes OUTPUT_DIR/run.lock:
    a second run on the folder is refused with a message naming the holder, and the stale lock of a run that died is
    taken over with a warning. Under the lock it checks again that the folder holds no run unless
    `args.resume_from_checkpoint` continues it; with `args.overwrite_output_dir` it moves the old run aside in one
    rename, then deletes it. Every process stops (SystemExit) when the claim fails. Call right after
    `make_accelerator`.
    """
    output_dir = Path(args.output_dir)
    replacing = args.resume_from_checkpoint is None and args.overwrite_output_dir
    error = None
    try:
        if accelerator.is_main_process:
            lock = held_lock(output_dir)  # this process's earlier run in the folder, finished
            if lock is None:
                lock = RunLock(output_dir)
                warning = lock.acquire()
                if warning:
                    print(f"warning: {warning}", file=sys.stderr)
            if args.resume_from_checkpoint is None and folder_holds_a_run(output_dir) and not replacing:
                lock.release()
                raise OutputDirBusyError(_already_holds_a_run(output_dir))
        if replacing and _writes_files(accelerator):
            if folder_holds_a_run(output_dir):
                _move_old_run_aside(output_dir, lock if accelerator.is_main_process else None)
            for leftover in output_dir.parent.glob(f".{output_dir.name}.replaced-*"):
                shutil.rmtree(leftover)  # an old run a killed replacement had moved aside
    except (OutputDirBusyError, OSError) as failure:
        error = str(failure)
    error = _first_error(accelerator, error)
    if error:
        raise SystemExit(f"error: {error}")


def _move_old_run_aside(output_dir: Path, lock: RunLock | None):
    """
    Replace the run in `output_dir`: one rename moves the whole folder aside, a new empty one (locked again when
    `lock` is given) takes its place, then the old one is deleted. A crash leaves the old run whole, in the folder or
    beside it as `.NAME.replaced-*`.
    """
    aside = output_dir.parent / f".{output_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.replace(output_dir, aside)
    fault_point("overwrite.moved-aside")
    output_dir.mkdir()
    if lock is not None:
        lock.path = aside / lock.path.name  # the held lock file moved with the folder
        try:
            RunLock(output_dir).acquire()
        except OutputDirBusyError as busy:
            raise OutputDirBusyError(f"{busy} The old run was kept, moved to {aside}.") from None
        lock.release()
    shutil.rmtree(aside)
    print(f"Replaced the run in {output_dir} (overwrite_output_dir).")


def get_lr_scheduler(accelerator: Accelerator, name: str, optimizer, num_warmup_steps: int, num_training_steps: int):
    """A transformers schedule counted in optimizer steps, for `accelerator.prepare`."""
    # A prepared scheduler steps once per process at every optimizer step, so its lengths scale with the processes.
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=num_warmup_steps * accelerator.num_processes,
        num_training_steps=num_training_steps * accelerator.num_processes,
    )


def select_splits(
    splits: datasets.Dataset | datasets.DatasetDict, args: argparse.Namespace
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """
    The training and validation sets that a recipe's data flags ask for: --train_split; --validation_split or, where
    the data has no such split, --validation_size examples of the training split held out (a draw seeded by --seed);
    then the first --max_train_samples and --max_validation_samples only. A lone `Dataset` is the training split.
    """
    if isinstance(splits, datasets.Dataset):
        splits = datasets.DatasetDict({"train": splits})
    if args.train_split not in splits:
        raise ValueError(f"There is no --train_split {args.train_split!r}; the splits are {sorted(splits)}.")
    train = splits[args.train_split]
    if args.validation_split in splits:
        validation = splits[args.validation_split]
    else:
        held_out = train.train_test_split(test_size=args.validation_size, seed=args.seed)
        train, validation = held_out["train"], held_out["test"]
        PartialState().print(f"No {args.validation_split!r} split: holding out {len(validation)} training examples.")
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_validation_samples is not None:
        validation = validation.select(range(min(args.max_validation_samples, len(validation))))
    return train, validation


def tracker_config(args: argparse.Namespace) -> dict:
    """The flags and `model.FIELD`s that trackers such as TensorBoard accept: scalars only."""
    scalar = (int, float, str, bool)
    config = {name: value for name, value in vars(args).items() if isinstance(value, scalar)}
    config.update({f"model.{name}": value for name, value in args.model.items() if isinstance(value, scalar)})
    return config


class TrainingState:
    """
    What the Accelerator does not know about: the step count, the time spent, the best validation loss and the
    validation history, so a resumed run continues all four. `resume_or_start_afresh` makes one, registers it for
    checkpointing and sets the two facts about the run itself that `save_checkpoint` writes into each manifest:
    `lineage` (the runs that led to this one, see `larp_hf.checkpointing`) and `config` (the run's settings).
    """

    def __init__(self):
        self.step = 0
        self.train_seconds = 0.0
        self.best_val_loss = math.inf
        self.best_step = 0
        self.history = []  # one entry per validation: its metrics, `step` and `train_seconds`
        self.lineage = []
        self.config = {}
        self._clock_start = None

    def start_clock(self):
        """Start timing the training loop, counting on from the time a resumed run had spent already."""
        self._clock_start = time.perf_counter() - self.train_seconds

    def count_step(self):
        """Count an optimizer step and the time spent up to it."""
        self.step += 1
        self.train_seconds = time.perf_counter() - self._clock_start

    def state_dict(self):
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "history": self.history,
        }

    def load_state_dict(self, state):
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_step = int(state["best_step"])
        self.history = list(state["history"])


# Settings that say where and how a run is kept, not what it trains: left out of the config hash.
_NOT_CONFIG = ("config", "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "report_to", "save_on_each_node")


def run_config(args: argparse.Namespace | dict) -> dict:
    """The settings of a run that its checkpoints record (as run_config.json, hashed in the manifest)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return json.loads(json.dumps({name: value for name, value in values.items() if name not in _NOT_CONFIG}, default=str))


def capture_rng_state() -> dict:
    """This process's Python, NumPy, torch and CUDA random states, in a form `checkpointing.write_state` stores."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict):
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserve_random_state():
    """
    Run a block (validation) without moving any global random state, so that training draws the same numbers
    whether or not, and however often, it validates. Iterating a DataLoader alone draws a seed from torch's global
    generator; a run validated at its last step and then extended would otherwise not match a longer run.
    """
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def _is_sharded(accelerator: Accelerator, model: torch.nn.Module | None) -> bool:
    """Whether each process holds a shard of the weights: FSDP (1 or 2, through Accelerate or `fully_shard`)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return model is not None and any(isinstance(p, DTensor) for p in model.parameters())


def _model_of(accelerator: Accelerator, index: int) -> torch.nn.Module | None:
    """The model whose parameters the `index`-th optimizer steps, as Accelerate pairs them (by order of prepare)."""
    return accelerator._models[index] if index < len(accelerator._models) else None


def _state_dict_options(full_on_every_process: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Full (unsharded) tensors on the CPU: on process 0 only, unless every node's local main process writes its own.
    return StateDictOptions(full_state_dict=True, cpu_offload=not full_on_every_process)


def gather_model_state(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """
    The full state dict of a prepared model, gathered from its shards where it is sharded (a collective then: call it
    on every process). None on processes that do not write files.
    """
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        state_dict = accelerator.get_state_dict(model)  # ZeRO-3 gathers the 16-bit weights on process 0
    elif _is_sharded(accelerator, model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        options = _state_dict_options(accelerator.project_configuration.save_on_each_node)
        state_dict = {name: tensor.cpu() for name, tensor in get_model_state_dict(model, options=options).items()}
    else:
        state_dict = accelerator.unwrap_model(model, keep_torch_compile=False).state_dict()
    return state_dict if _writes_files(accelerator) and state_dict else None


def _gather_optimizer_state(accelerator: Accelerator, optimizer, model: torch.nn.Module) -> dict | None:
    if _is_sharded(accelerator, model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        options = _state_dict_options(accelerator.project_configuration.save_on_each_node)
        state = get_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer), options=options)
    else:
        state = optimizer.state_dict()
    return state if _writes_files(accelerator) else None


def _load_model_state(accelerator: Accelerator, model: torch.nn.Module, state_dict: dict):
    if _is_sharded(accelerator, model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True))
    else:
        accelerator.unwrap_model(model, keep_torch_compile=False).load_state_dict(state_dict)


def _load_optimizer_state(accelerator: Accelerator, optimizer, model: torch.nn.Module, state: dict):
    if _is_sharded(accelerator, model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        inner = getattr(optimizer, "optimizer", optimizer)
        set_optimizer_state_dict(model, inner, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def _first_non_finite(value, name: str) -> str | None:
    """The name of the first floating tensor in `value` (nested dicts and lists) holding a NaN or an infinity."""
    if isinstance(value, torch.Tensor):
        return name if value.is_floating_point() and not torch.isfinite(value).all() else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return next((bad for key, item in items if (bad := _first_non_finite(item, f"{name}.{key}"))), None)


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
    partial, final = checkpoints_dir / f".tmp-checkpoint-{step}", checkpoints_dir / f"checkpoint-{step}"
    writes = _writes_files(accelerator)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    fault_point("checkpoint.start")

    # Full states, gathered from the shards under FSDP (collectives: every process takes part).
    models = [gather_model_state(accelerator, model) for model in accelerator._models]
    optimizers = (
        []
        if deepspeed  # DeepSpeed keeps the optimizer partitions in its own files, written below
        else [_gather_optimizer_state(accelerator, o, _model_of(accelerator, i)) for i, o in enumerate(accelerator._optimizers)]
    )
    error = None
    if writes:
        bad = _first_non_finite(models, "model") or _first_non_finite(optimizers, "optimizer")
        if bad:
            error = f"Refusing to save checkpoint-{step}: {bad} is not finite (NaN or infinite); training diverged."
    error = _first_error(accelerator, error)
    if error:
        raise FloatingPointError(error)

    error = None
    try:
        if writes:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
    except OSError as failure:
        error = f"Could not create {partial}: {failure}"
    error = _first_error(accelerator, error)  # the folder exists before anyone writes into it
    if error:
        raise SystemExit(f"error: {error}")

    try:
        checkpointing.write_state(partial, f"random_states_{accelerator.process_index}", capture_rng_state())
        if deepspeed:
            for index, model in enumerate(accelerator._models):
                model.save_checkpoint(str(partial / "deepspeed"), tag=_indexed("model", index), save_latest=False)
        if writes:
            for index, state_dict in enumerate(models):
                if state_dict is not None:
                    checkpointing.write_weights(partial / f"{_indexed('model', index)}.safetensors", state_dict)
            fault_point("checkpoint.model-written")
            for index, optimizer_state in enumerate(optimizers):
                checkpointing.write_state(partial, _indexed("optimizer", index), optimizer_state)
            for index, scheduler in enumerate(_schedulers(accelerator)):
                checkpointing.write_state(partial, _indexed("scheduler", index), scheduler.state_dict())
            if accelerator.scaler is not None:
                checkpointing.write_state(partial, "scaler", accelerator.scaler.state_dict())
            for index, obj in enumerate(accelerator._custom_objects):
                checkpointing.write_state(partial, f"custom_state_{index}", obj.state_dict())
            checkpointing.write_state(partial, "accelerator_state", _accelerator_state(accelerator))
            checkpointing.write_state(partial, "run_config", state.config)
        error = None
    except OSError as failure:
        error = f"Could not write checkpoint-{step} in {partial}: {failure}"
    error = _first_error(accelerator, error)  # every process's files are written
    if error:
        raise SystemExit(f"error: {error}")
    fault_point("checkpoint.files-written")

    try:
        if writes:
            config_hash = checkpointing.config_sha256(state.config)
            checkpointing.write_manifest(partial, step, state.lineage, config_hash, accelerator.num_processes)
            fault_point("checkpoint.manifest-written")
            checkpointing.install_checkpoint(partial, final)
            if total_limit is not None and total_limit > 0:
                checkpointing.prune_checkpoints(checkpoints_dir, state.lineage, total_limit)
        error = None
    except OSError as failure:
        error = f"Could not finish checkpoint-{step} in {checkpoints_dir}: {failure}"
    error = _first_error(accelerator, error)
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
    not verified (`resolve_checkpoint` verifies). Half-written, replaced and abandoned checkpoints are never picked.
    """
    head = checkpointing.read_head(checkpoints_dir.parent)
    return next(iter(checkpointing.lineage_checkpoints(checkpoints_dir, head)), None)


def resolve_checkpoint(resume_from_checkpoint: str, checkpoints_dir: Path) -> Path:
    """
    `latest`, `latest_intact` or a folder -> the checkpoint folder, its files verified against its manifest; a
    SystemExit naming the folder and the file when there is none or it is damaged.
    """
    try:
        folder, _, notes = checkpointing.find_checkpoint(resume_from_checkpoint, checkpoints_dir)
    except CheckpointError as error:
        raise SystemExit(f"error: {error} Drop --resume_from_checkpoint to start from scratch.") from None
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return folder


def resume_or_start_afresh(
    accelerator: Accelerator, resume_from_checkpoint: str | None, output_dir: Path, config: dict | None = None
) -> TrainingState:
    """
    Call after `accelerator.prepare` (and after `claim_output_dir`). Returns a `TrainingState`, registered for
    checkpointing. With `resume_from_checkpoint` (`latest`, `latest_intact` or a folder), the checkpoint is verified
    against its manifest and everything it holds is restored: weights, optimizer, schedule, random states, samplers
    and the state; a damaged one is refused (SystemExit naming the file) and no pickle is ever loaded. Without, old
    checkpoints in OUTPUT_DIR are deleted, so that `latest` can never pick one of another run. `config` (the run's
    settings, `run_config(args)`) is recorded in every checkpoint; a resume with other settings names them.
    Interrupted saves of an earlier run are finished or undone first, and OUTPUT_DIR/run.json records this run's
    lineage, which `latest` follows from then on.
    """
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    state.config = run_config(config or {})
    checkpoints_dir = output_dir / CHECKPOINTS_DIR
    writes = _writes_files(accelerator)
    run_id = checkpointing.new_run_id()

    # Every file-writing process resolves the checkpoint on its own disk and verifies it; all must agree.
    found, error = None, None
    try:
        if writes:
            for note in checkpointing.recover_checkpoints_dir(checkpoints_dir):
                print(f"{checkpoints_dir}: {note}", file=sys.stderr)
        if writes and resume_from_checkpoint is not None:
            folder, manifest, notes = checkpointing.find_checkpoint(resume_from_checkpoint, checkpoints_dir)
            for note in notes:
                print(f"warning: {note}", file=sys.stderr)
            found = (str(folder), manifest["step"], manifest["lineage"])
        elif writes and checkpoints_dir.exists():
            doomed = checkpoints_dir.with_name(f".{CHECKPOINTS_DIR}.deleting")
            os.replace(checkpoints_dir, doomed)
            shutil.rmtree(doomed)
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
            _load_checkpoint(accelerator, Path(folder))
        except CheckpointError as failure:  # e.g. one written under DeepSpeed, whose optimizer is in DeepSpeed's files
            raise SystemExit(f"error: {failure} It was written by another kind of run than this one.") from None
        state.lineage = [*lineage, {"run": run_id, "from_step": step}]
        _report_changed_settings(accelerator, Path(folder), state.config)
    else:
        state.lineage = [{"run": run_id, "from_step": 0}]

    error = None
    if writes:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(output_dir / checkpointing.RUN_FILE, {"lineage": state.lineage, "config": state.config})
        except OSError as failure:
            error = f"Could not write {output_dir / checkpointing.RUN_FILE}: {failure}"
    error = _first_error(accelerator, error)
    if error:
        raise SystemExit(f"error: {error}")
    return state


def _load_checkpoint(accelerator: Accelerator, folder: Path):
    """Restore every prepared object, the registered states and this process's random state from `folder`."""
    manifest = checkpointing.read_manifest(folder)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed reads its own (pickled) partition files, checked against the manifest above.
        for index, model in enumerate(accelerator._models):
            model.load_checkpoint(str(folder / "deepspeed"), tag=_indexed("model", index), load_lr_scheduler_states=False)
    else:
        for index, model in enumerate(accelerator._models):
            _load_model_state(accelerator, model, checkpointing.read_weights(folder / f"{_indexed('model', index)}.safetensors"))
        for index, optimizer in enumerate(accelerator._optimizers):
            state = checkpointing.read_state(folder, _indexed("optimizer", index))
            _load_optimizer_state(accelerator, optimizer, _model_of(accelerator, index), state)
    for index, scheduler in enumerate(_schedulers(accelerator)):
        scheduler.load_state_dict(checkpointing.read_state(folder, _indexed("scheduler", index)))
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(checkpointing.read_state(folder, "scaler"))
    for index, obj in enumerate(accelerator._custom_objects):
        obj.load_state_dict(checkpointing.read_state(folder, f"custom_state_{index}"))
    _load_accelerator_state(accelerator, checkpointing.read_state(folder, "accelerator_state"))

    stem = f"random_states_{accelerator.process_index}"
    if manifest["world_size"] == accelerator.num_processes:
        restore_rng_state(checkpointing.read_state(folder, stem))
    else:
        accelerator.print(
            f"warning: {folder} was written by {manifest['world_size']} process(es), this run has "
            f"{accelerator.num_processes}: the batches and random draws differ from the run that wrote it."
        )
        if any(name.startswith(f"{stem}.") for name in manifest["files"]):
            restore_rng_state(checkpointing.read_state(folder, stem))


def _report_changed_settings(accelerator: Accelerator, folder: Path, config: dict):
    saved = checkpointing.read_state(folder, "run_config")
    changed = [
        f"{name} {saved.get(name)!r} -> {config.get(name)!r}"
        for name in sorted(set(saved) | set(config))
        if saved.get(name) != config.get(name)
    ]
    if changed:
        accelerator.print(f"Resuming with settings that differ from {folder.name}'s: {'; '.join(changed)}.")


def optimizer_steps_per_epoch(accelerator: Accelerator, train_dataloader) -> int:
    """Optimizer steps in one pass over a prepared dataloader; a last, partial accumulation is a step too."""
    # Accelerate syncs gradients at the end of the dataloader whatever the accumulation count.
    steps = math.ceil(len(train_dataloader) / accelerator.gradient_accumulation_steps)
    if steps == 0:
        raise ValueError("The training dataloader yields no batches: the training split is empty.")
    return steps


def train_batches(accelerator: Accelerator, train_dataloader, state: TrainingState, max_steps: int):
    """
    Yield training batches, epoch after epoch, until `state.step` (which the loop counts up at each optimizer step)
    reaches `max_steps`. The epoch and the place in it follow from `state.step`, so a resumed run sees the very
    batches the interrupted one would have seen next.
    """
    epoch, step_in_epoch = divmod(state.step, optimizer_steps_per_epoch(accelerator, train_dataloader))
    while state.step < max_steps:
        train_dataloader.set_epoch(epoch)
        # After a resume, skip the batches of this epoch that were already trained on.
        skip = step_in_epoch * accelerator.gradient_accumulation_steps
        for batch in accelerator.skip_first_batches(train_dataloader, skip):
            yield batch
            if state.step >= max_steps:
                return
        step_in_epoch = 0
        epoch += 1


def stop_if_not_finite(accelerator: Accelerator, loss: torch.Tensor):
    """
    Raise FloatingPointError on every process when the loss of any process is NaN or infinite: before its backward,
    so that no step moves the weights with it and nothing non-finite is ever saved.
    """
    finite = torch.isfinite(loss.detach()).all().reshape(1).to(torch.int64)
    if accelerator.num_processes > 1:
        finite = accelerator.gather(finite)  # (num_processes,): every process decides on the same numbers
    if not bool(finite.all()):
        processes = [index for index, ok in enumerate(finite.tolist()) if not ok]
        raise FloatingPointError(
            f"The training loss is not finite (NaN or infinite) on process(es) {processes}; training stops before "
            "anything non-finite is saved. Lower the learning rate, clip the gradients, or check the data."
        )


def backward_and_step(accelerator: Accelerator, loss, model, optimizer, lr_scheduler, max_grad_norm: float = 0.0):
    """
    Stop on a non-finite loss (`stop_if_not_finite`), then backward and (inside `accelerator.accumulate(model)`) the
    optimizer and schedule steps, which Accelerate skips until the gradients are synced; gradients are clipped to
    `max_grad_norm` (0: not clipped) when they are.
    """
    stop_if_not_finite(accelerator, loss)
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def is_due(step: int, every: int, max_steps: int) -> bool:
    """Validation and checkpoint schedule: every `every` steps, and always at the last one."""
    return step % every == 0 or step == max_steps


def record_validation(accelerator: Accelerator, state: TrainingState, metrics: dict, output_dir: Path) -> dict:
    """
    Stamp validation metrics (already reduced over the processes, so the same on all) with the step and training
    time, add them to the history, log them to the trackers and write OUTPUT_DIR/metrics.json. Returns the entry.
    A NaN metric means the weights diverged: FloatingPointError, before anything is written.
    """
    not_numbers = sorted(name for name, value in metrics.items() if isinstance(value, float) and math.isnan(value))
    if not_numbers:
        raise FloatingPointError(f"Validation at step {state.step} gave NaN {not_numbers}: the weights diverged.")
    # Milliseconds: a short run's seconds must not round to 0.
    entry = {**metrics, "step": state.step, "train_seconds": round(state.train_seconds, 3)}
    state.history.append(entry)
    accelerator.log({name: value for name, value in entry.items() if name != "step"}, step=state.step)
    if accelerator.is_main_process:
        write_json_atomic(output_dir / METRICS_FILE, {**entry, "history": state.history})
    return entry


def check_weights_identical(accelerator: Accelerator, model: torch.nn.Module):
    """Data parallelism must leave every process with the same weights: check it rather than assume it."""
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP and not any(
        isinstance(p, DTensor) for p in unwrapped.parameters()
    ):
        accelerator.print("Parameters sharded by FSDP: one copy of the weights, nothing to compare.")
        return
    # A sharded (DTensor) parameter is compared whole; each process holds only its own shard of it.
    parameters = [p.full_tensor() if isinstance(p, DTensor) else p for p in unwrapped.parameters()]
    checksum = torch.stack([p.detach().double().sum() for p in parameters]).sum().reshape(1)
    checksums = accelerator.gather(checksum.to(accelerator.device))
    if not torch.all(checksums == checksums[0]):
        raise RuntimeError(f"The processes ended with different weights (parameter sums {checksums.tolist()}).")
    accelerator.print(f"Parameters identical across {accelerator.num_processes} process(es).")


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
    if state_dict is not None and (bad := _first_non_finite(state_dict, "model")):
        error = f"Refusing to save the model to {folder}: {bad} is not finite (NaN or infinite); training diverged."
    error = _first_error(accelerator, error)
    if error:
        raise FloatingPointError(error)
    try:
        # The main process alone: transformers' save_pretrained writes on the first process only, on every node.
        if accelerator.is_main_process:
            # Sharded weights are saved from the gathered copy; whole ones as transformers saves them.
            gathered = state_dict if _is_sharded(accelerator, model) else None
            _save_pretrained_atomic(folder, [unwrapped, *processors], {unwrapped: gathered})
        error = None
    except OSError as failure:
        error = f"Could not save the model to {folder}: {failure}"
    error = _first_error(accelerator, error)
    if error:
        raise SystemExit(f"error: {error}")
    return unwrapped


def _save_pretrained_atomic(folder: Path, parts: list, state_dicts: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".tmp-save-*"):
        shutil.rmtree(leftover, ignore_errors=True)  # of a save that was killed
    partial = Path(tempfile.mkdtemp(prefix=".tmp-save-", dir=folder))
    try:
        for part in parts:
            state_dict = state_dicts.get(part)
            part.save_pretrained(partial, **({"state_dict": state_dict} if state_dict is not None else {}))
        names = sorted(path.relative_to(partial) for path in partial.rglob("*") if path.is_file())
        for name in names:
            with open(partial / name, "rb") as handle:
                os.fsync(handle.fileno())
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial / name, folder / name)
            fault_point("model.file-replaced")
        checkpointing.fsync_folder(folder)
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
    nothing left to train), the step count, the training time, `extra` and the history. Returns what it wrote.
    """
    latest = state.history[-1] if state.history else {}
    final = {**latest, "step": state.step, "train_seconds": round(state.train_seconds, 3), **extra}
    final["history"] = state.history
    write_json_atomic(output_dir / METRICS_FILE, final)
    return final


__all__ = [
    "TrainingState",
    "backward_and_step",
    "capture_rng_state",
    "check_weights_identical",
    "claim_output_dir",
    "find_latest_checkpoint",
    "folder_holds_a_run",
    "gather_model_state",
    "get_lr_scheduler",
    "is_due",
    "make_accelerator",
    "optimizer_steps_per_epoch",
    "parse_args_with_config",
    "preserve_random_state",
    "record_validation",
    "refuse_to_overwrite_a_run",
    "resolve_checkpoint",
    "restore_rng_state",
    "resume_or_start_afresh",
    "run_config",
    "save_checkpoint",
    "save_final_model",
    "save_model",
    "select_splits",
    "stop_if_not_finite",
    "tracker_config",
    "train_batches",
    "write_final_metrics",
    "write_json_atomic",
]
