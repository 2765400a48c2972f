"""
A recipe's flags, in one place: the ones every run shares (`add_run_arguments`, `add_step_arguments`,
`add_split_arguments`) with their checks (the `type`s below and `check_run_arguments`), `--config` parsing, the start
of a run (`start_run`), and what the flags select and record (the splits, the settings trackers and checkpoints keep).
"""

import argparse
import dataclasses
import json
import math
import types
import typing
import os
from pathlib import Path

import datasets
import yaml
from accelerate import Accelerator, PartialState
from transformers import SchedulerType

from ..data.provenance import DatasetRecord, choose_dataset
from ..errors import describe_error
from ..flags import DefaultsHelpFormatter, parse_list  # noqa: F401 (DefaultsHelpFormatter: larp_hf.training exports it)
from ..local_paths import check_local_path
from .accelerator import MIXED_PRECISION_CHOICES, check_trackers, make_accelerator
from . import checkpoint_format
from .layout import (
    CHECKPOINTS_DIR,
    already_holds_a_run,
    claim_output_dir,
    continues_a_run,
    folder_holds_a_run,
    output_dir_refusal,
)


# Argument types that check a count or rate where argparse reads it, the same for a flag on the command line and for
# its key in the `--config` file, and refuse it with the reason: `parser.error` before any work, rather than a division
# by zero at the first checkpoint.


def positive_int(text: str) -> int:
    """An argument type: an integer of at least 1 (`--max_steps`, batch sizes, `--checkpointing_steps`)."""
    return _integer(text, minimum=1)


def non_negative_int(text: str) -> int:
    """An argument type: an integer of at least 0 (`--lr_warmup_steps`, `--dataloader_num_workers`)."""
    return _integer(text, minimum=0)


def positive_float(text: str) -> float:
    """An argument type: a finite number above 0 (`--learning_rate`)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argument type: a finite number of at least 0 (`--weight_decay`, `--max_grad_norm`)."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def add_mixed_precision_argument(parser: argparse.ArgumentParser):
    """`--mixed_precision`, the same in every recipe: `make_accelerator` resolves its default, "auto"."""
    parser.add_argument(
        "--mixed_precision", type=str, default="auto", choices=MIXED_PRECISION_CHOICES,
        help="auto: bf16 autocast on a CPU that does bf16 in hardware, else what `accelerate launch` was told; "
        "no: fp32.",
    )  # fmt: skip


def add_run_arguments(
    parser: argparse.ArgumentParser, *, output_dir: str, eval_batch_size: int, learning_rate: float
) -> argparse._ArgumentGroup:
    """
    The flags every training recipe takes, with the same names, types, checks and defaults: `--config`, the output
    folder and what to do with a run already there, the seed, the evaluation batch size, gradient accumulation, the
    learning rate and its schedule, mixed precision, checkpoints kept and resumed, DataLoader workers and trackers.
    The defaults that differ between recipes are keyword arguments here, so each recipe states its own. `start_run`
    reads these flags; call `check_run_arguments` at the end of `parse_args`.
    """
    group = parser.add_argument_group("run")
    group.add_argument("--config", type=str, default=None, help="YAML file whose keys set the defaults of these flags.")
    group.add_argument("--output_dir", type=str, default=output_dir)
    group.add_argument(
        "--overwrite_output_dir", action="store_true",
        help="Start afresh in a folder that holds a finished run or checkpoints (they are replaced).",
    )  # fmt: skip
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--eval_batch_size", type=positive_int, default=eval_batch_size)
    group.add_argument("--gradient_accumulation_steps", type=positive_int, default=1)
    group.add_argument("--learning_rate", type=positive_float, default=learning_rate)
    group.add_argument(
        "--lr_scheduler", type=str, default="cosine", choices=[scheduler.value for scheduler in SchedulerType],
        help="A transformers scheduler name.",
    )  # fmt: skip
    add_mixed_precision_argument(group)
    group.add_argument(
        "--checkpoints_total_limit", type=non_negative_int, default=2,
        help="Keep at most this many checkpoints (0: all of them).",
    )  # fmt: skip
    group.add_argument(
        "--resume_from_checkpoint", type=str, default=None,
        help="A checkpoint folder, 'latest' for the newest one of this run in OUTPUT_DIR/checkpoints (refused if "
        "damaged), or 'latest_intact' for the newest one that is not. The model settings are the checkpoint's "
        "(--model.FIELD, the prior's --preset): they need not be repeated, and another value is refused.",
    )  # fmt: skip
    group.add_argument(
        "--resume_from_other_run", action="store_true",
        help="--resume_from_checkpoint names a checkpoint of another run's folder: start a new run in OUTPUT_DIR from "
        "it (its metrics record where it came from) rather than continue that run.",
    )  # fmt: skip
    group.add_argument(
        "--save_on_each_node", action="store_true",
        help="OUTPUT_DIR is on each node's own disk: each node writes and finishes its checkpoints there.",
    )  # fmt: skip
    group.add_argument(
        "--dataloader_num_workers", type=non_negative_int, default=0,
        help="Processes that read and preprocess the examples of each batch (0: the training process does).",
    )  # fmt: skip
    group.add_argument(
        "--report_to", type=str, default=None,
        help="Accelerate trackers, comma-separated ('tensorboard', 'wandb', ...) or 'all' (those installed); refused "
        "if one is not installed. They get the scalars and the validation image grids.",
    )  # fmt: skip
    return group


def add_step_arguments(
    parser: argparse.ArgumentParser, *, train_batch_size: int, lr_warmup_steps: int
) -> argparse._ArgumentGroup:
    """
    The flags of a run counted in optimizer steps (`training.train_batches`, `training.is_due`): how many, the batch
    size, the warmup, gradient clipping, and how often to validate and save a checkpoint.
    """
    group = parser.add_argument_group("optimizer steps")
    group.add_argument("--max_steps", type=positive_int, default=1000, help="Optimizer steps to train for.")
    group.add_argument("--train_batch_size", type=positive_int, default=train_batch_size, help="Per-process batch size.")
    group.add_argument("--lr_warmup_steps", type=non_negative_int, default=lr_warmup_steps)
    group.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="Clip gradients to it (0: not).")
    group.add_argument("--validation_steps", type=positive_int, default=250, help="Validate every N optimizer steps.")
    group.add_argument("--checkpointing_steps", type=positive_int, default=500, help="Save a checkpoint every N steps.")
    return group


def add_split_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The flags `select_splits` reads (with `--seed`): which split trains, which validates, and how much of each."""
    group = parser.add_argument_group("splits")
    group.add_argument("--train_split", type=str, default="train")
    group.add_argument(
        "--validation_split", type=str, default="test",
        help="Held-out split; if the dataset lacks it, --validation_size examples of the train split are held out.",
    )  # fmt: skip
    group.add_argument(
        "--validation_size", type=positive_int, default=1000,
        help="Examples held out when there is no such split (at most a fifth of the training split).",
    )  # fmt: skip
    group.add_argument("--max_train_samples", type=positive_int, default=None, help="Train on at most this many.")
    group.add_argument("--max_validation_samples", type=positive_int, default=None, help="Validate on at most this many.")
    return group


def check_run_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, inputs: dict[str, str | None] | None = None
):
    """
    The checks of the shared flags that their types cannot make alone, for the end of every recipe's `parse_args`
    (`parser.error`, before any work): a folder that holds a run is continued or replaced explicitly, never by
    accident; OUTPUT_DIR is none of the run's `inputs` (flag -> the path it names; `--config` is added here), does
    not contain one and does not lie inside one; another run's checkpoint is resumed only with
    --resume_from_other_run; an input that is a local path (`./x`, `/x`, `outputs/x`) exists; the --report_to trackers
    are installed. Counts and rates are checked by their types, on the command line and in the `--config`
    file alike.
    """
    refusal = output_dir_refusal(args, {"--config": getattr(args, "config", None), **(inputs or {})})
    if refusal:
        parser.error(refusal)
    refuse_to_overwrite_a_run(parser, args)
    for flag, path in (inputs or {}).items():
        try:
            if path is not None:
                check_local_path(path, flag)
        except FileNotFoundError as error:
            parser.error(str(error).replace(f"`{flag}`", flag))
    try:
        check_trackers(args.report_to)
    except ValueError as error:
        parser.error(in_flag_terms(str(error)))


def start_run(args: argparse.Namespace, inputs: dict[str, str | None] | None = None) -> Accelerator:
    """
    The start of every recipe's run, from the flags of `add_run_arguments`: the refusals of `output_dir_refusal`
    (OUTPUT_DIR among the run's `inputs`, flag -> path, or a resume that mixes two runs) before anything is made; the
    Accelerator (seed, mixed precision, gradient accumulation, trackers, `--save_on_each_node`), `args.mixed_precision`
    set to what "auto" or the launcher chose (the checkpoints record it), and the claim on OUTPUT_DIR: one run per
    folder, a lock held until exit, an old run moved aside with --overwrite_output_dir.
    """
    inputs = {"--config": getattr(args, "config", None), **(inputs or {})}
    refusal = output_dir_refusal(args, inputs)  # the same on every process: paths only
    if refusal:
        raise SystemExit(f"error: {refusal}")
    try:
        accelerator = make_accelerator(
            Path(args.output_dir), args.seed, args.mixed_precision, args.gradient_accumulation_steps,
            log_with=args.report_to, save_on_each_node=args.save_on_each_node,
        )  # fmt: skip
    except ValueError as error:  # fp16 on a CPU, a tracker that is not installed
        raise SystemExit(f"error: {in_flag_terms(str(error))}") from None
    args.mixed_precision = accelerator.mixed_precision
    claim_output_dir(accelerator, args, inputs)
    return accelerator


# The arguments of make_accelerator's refusals, as the recipes' flags.
_FLAGS_OF_ARGUMENTS = {"mixed_precision": "--mixed_precision", "log_with": "--report_to"}


def in_flag_terms(message: str) -> str:
    """A library refusal that names `make_accelerator`'s arguments, said with the recipe flags that set them."""
    for argument, flag in _FLAGS_OF_ARGUMENTS.items():
        message = message.replace(f"`{argument}`", flag)
    return message


def parse_args_with_config(
    parser: argparse.ArgumentParser,
    argv,
    model_config_class,
    *,
    model_flags: tuple[str, ...] = (),
    model_shorthands: tuple[str, ...] = (),
) -> argparse.Namespace:
    """
    Parse a recipe's flags in two passes: `--config x.yaml` sets their defaults, the command line overrides them.
    The YAML's `model:` mapping and `--model.FIELD VALUE` flags go to `args.model`, checked against the fields of
    `model_config_class` (a config class, or a function of the parsed args that returns one); unknown YAML keys, flags
    and fields are errors. `model_shorthands` are flags that set the model field of their name (the classifier's
    `--image_size`); they are moved into `args.model`.

    With `--resume_from_checkpoint`, the model is the checkpoint's: `args.model` and the flags `model_flags` that also
    decide the model's shape (the prior's `--preset`) are taken from the settings the checkpoint records, so a resume
    needs none of them repeated; one given (on the command line or in the `--config` file) with another value than
    the checkpoint's is an error naming the setting and both values.
    """
    config_args, _ = parser.parse_known_args(argv)
    model_overrides, asked = {}, {}  # asked: field or flag -> how the user asked for it, for the refusals
    if config_args.config is not None:
        try:
            with open(config_args.config) as handle:
                file_config = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError) as error:  # a typo in the path, a folder, a syntax error: name the file
            parser.error(f"--config {config_args.config}: {describe_error(error)}")
        if not isinstance(file_config, dict):
            parser.error(f"--config {config_args.config} must hold a mapping of flag names to values, not a "
                         f"{type(file_config).__name__}.")  # fmt: skip
        model_overrides.update(file_config.pop("model", None) or {})
        for name, value in model_overrides.items():
            asked[f"model.{name}"] = f"model.{name}: {value!r} in {config_args.config}"
        actions = {action.dest: action for action in parser._actions if action.option_strings}
        unknown = sorted(set(file_config) - set(actions))
        if unknown:
            parser.error(f"{config_args.config} sets unknown options {unknown}; see --help for the valid ones.")
        parser.set_defaults(**{
            name: _value_from_config(parser, actions[name], value, config_args.config)
            for name, value in file_config.items()
        })  # fmt: skip
        asked.update({name: f"{name}: {value!r} in {config_args.config}" for name, value in file_config.items()})
    args, rest = parser.parse_known_args(argv)
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--model.") or not rest:
            parser.error(f"unrecognized argument {flag!r}")
        text = rest.pop(0)
        model_overrides[flag[len("--model.") :]] = yaml.safe_load(text)
        asked[f"model.{flag[len('--model.'):]}"] = f"{flag} {text}"
    asked.update({dest: f"--{dest} {value}" for dest, value in _given_on_command_line(parser, argv).items()})
    for name in model_shorthands:
        value = vars(args).pop(name)
        if value is not None:
            model_overrides[name] = value
            asked[f"model.{name}"] = asked.get(name, f"--{name} {value}")
    if not isinstance(model_config_class, type):  # chosen by the parsed flags, e.g. the prior's --architecture
        model_config_class = model_config_class(args)
    fields = {field.name: field for field in dataclasses.fields(model_config_class)}
    unknown_fields = sorted(set(model_overrides) - set(fields))
    if unknown_fields:
        parser.error(f"unknown {model_config_class.__name__} fields {unknown_fields} (in `model:` or --model.FIELD).")
    for name, value in model_overrides.items():
        kind = _list_kind(fields[name])
        if kind is not None and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            try:  # the one list syntax: --model.hidden_channels 32,64 (or [32,64]), as --hidden_channels takes it
                model_overrides[name] = parse_list(str(value), kind)
            except argparse.ArgumentTypeError as error:
                parser.error(f"--model.{name}: {error}")
        problem = _integer_field_problem(fields[name].type, model_overrides[name])
        if problem:
            parser.error(f"model field {name} (in `model:` or --model.{name}) {problem}, got {value!r}.")
    args.model = model_overrides
    if getattr(args, "resume_from_checkpoint", None) is not None:
        _take_model_settings_from_checkpoint(parser, args, model_flags, asked)
    return args


def _integer_field_problem(annotation, value) -> str | None:
    """
    What is wrong with `value` for a model config field annotated `annotation` when the field holds integers (`int`,
    `int | None`, `list[int]`, `tuple[int, ...]`), else None: YAML reads `2.7` as a float and `yes` as a boolean,
    and a float count would train a different model than the one recorded. Other fields are left to the config.
    """
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    arms = typing.get_args(annotation) if union else (annotation,)
    if int in arms and float not in arms:
        if value is None and type(None) in arms:
            return None
        return None if type(value) is int else "must be an integer (not a float or a boolean)"
    sequences = [arm for arm in arms if typing.get_origin(arm) in (list, tuple) and int in typing.get_args(arm)]
    if sequences and isinstance(value, (list, tuple)) and not all(type(item) is int for item in value):
        return "must be a list of integers"
    return None


def _given_on_command_line(parser: argparse.ArgumentParser, argv) -> dict:
    """The flags the command line sets (not their defaults), by dest: a parse in which every default is a marker."""
    unset = object()
    namespace = argparse.Namespace(**{action.dest: unset for action in parser._actions if action.dest != "help"})
    parsed, _ = parser.parse_known_args(argv, namespace)
    return {dest: value for dest, value in vars(parsed).items() if value is not unset}


def checkpoint_settings(resume_from_checkpoint: str, output_dir: str | Path) -> tuple[Path, dict] | None:
    """
    The checkpoint `--resume_from_checkpoint` names (for `latest`, the newest of OUTPUT_DIR's run, as
    `find_latest_checkpoint` picks it) and the run settings it records (run_config, read through its manifest); None
    where none can be read yet: `resume_or_start_afresh` then refuses with the reason, or recovers the folder first.
    """
    checkpoints_dir = Path(output_dir) / CHECKPOINTS_DIR
    try:
        if resume_from_checkpoint == "latest_intact":
            folder = checkpoint_format.find_checkpoint(resume_from_checkpoint, checkpoints_dir)[0]
        elif resume_from_checkpoint == "latest":
            head = checkpoint_format.read_head(checkpoints_dir.parent)
            folder = next(iter(checkpoint_format.lineage_checkpoints(checkpoints_dir, head)), None)
        else:
            folder = Path(resume_from_checkpoint)
        if folder is None:
            return None
        return folder, checkpoint_format.CheckpointReader(folder).read_state("run_config")
    except (checkpoint_format.CheckpointError, OSError, KeyError, TypeError):
        return None


def _take_model_settings_from_checkpoint(parser, args: argparse.Namespace, model_flags: tuple[str, ...], asked: dict):
    """`args.model` and `model_flags` set to the checkpoint's; a contradicting value the user asked for is refused."""
    found = checkpoint_settings(args.resume_from_checkpoint, args.output_dir)
    if found is None:
        return
    folder, saved = found
    saved_model = saved.get("model") or {}
    wanted = {f"model.{name}": value for name, value in args.model.items()}
    wanted.update({name: getattr(args, name) for name in model_flags if name in asked})
    recorded = {f"model.{name}": value for name, value in saved_model.items()}
    recorded.update({name: saved[name] for name in model_flags if name in saved})
    for name, value in wanted.items():
        if name in recorded and _same(recorded[name], value):
            continue
        has = f"{name}={recorded[name]!r}" if name in recorded else f"{name} at its default"
        parser.error(
            f"{folder.name} has {has}, you asked {asked[name]}. A resumed run keeps its checkpoint's model: drop the "
            "setting (the checkpoint's is used), or start a new run without --resume_from_checkpoint."
        )
    for name in model_flags:
        if name in saved:
            setattr(args, name, saved[name])
    args.model = dict(saved_model)
    if int(os.environ.get("RANK", "0")) == 0:  # once, not once per process
        taken = ", ".join(f"{name}={value!r}" for name, value in recorded.items()) or "the defaults"
        print(f"Resuming from {folder}: its model settings are used ({taken}).")


def _same(recorded, value) -> bool:
    """A recorded setting (through JSON: lists, no tuples) against a parsed one."""
    return json.loads(json.dumps(value, default=str)) == recorded


def _list_kind(field: dataclasses.Field) -> type | None:
    """The item type of a config field whose default is a list (`hidden_channels`), else None."""
    default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
    if not isinstance(default, (list, tuple)) or not default:
        return None
    return int if all(isinstance(item, int) for item in default) else float


def _value_from_config(parser: argparse.ArgumentParser, action: argparse.Action, value, path: str):
    """
    A value of the `--config` file, converted and checked as its flag's text on the command line would be (the
    flag's `type` and `choices`): argparse applies neither to a default that is not a string, so `max_steps: 2.7`
    would otherwise train for 2.7 steps, i.e. 3. YAML's null is taken where the flag's default is None; a switch
    (`store_true`, `--flag/--no-flag`) takes true or false.
    """
    flag = action.option_strings[0]
    where = f"{path} sets {action.dest}: {value!r}"
    if value is None:
        if action.default is None:
            return None
        parser.error(f"{where}, but {flag} needs a value.")
    if action.nargs == 0:  # a switch
        if isinstance(value, bool):
            return value
        parser.error(f"{where}, but {flag} is a switch: true or false.")
    if isinstance(value, bool):  # YAML reads an unquoted no, yes, off, on as a boolean
        parser.error(f"{where}, but {flag} takes a value, not a boolean (quote an unquoted no, yes, off or on).")
    if isinstance(value, list) and getattr(action.type, "reads_a_list", False):
        value = ",".join(map(str, value))  # a YAML list, for a list flag (`hidden_channels: [32, 64]`)
    if isinstance(value, (list, dict)):
        parser.error(f"{where}, but {flag} takes one value, as on the command line (model fields go under `model:`).")
    text = value if isinstance(value, str) else str(value)
    try:
        converted = action.type(text) if action.type is not None else text
    except argparse.ArgumentTypeError as error:
        parser.error(f"{where}: {flag} {error}.")
    except (TypeError, ValueError):
        parser.error(f"{where}: {flag} takes a {getattr(action.type, '__name__', 'different value')}.")
    if action.choices is not None and converted not in action.choices:
        parser.error(f"{where}: {flag} is one of {', '.join(map(str, action.choices))}.")
    return converted


def refuse_to_overwrite_a_run(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """
    A folder that holds a run is continued or replaced explicitly, never by accident. An early check for
    `parse_args`; `claim_output_dir` checks again under the folder's lock.
    """
    output_dir = Path(args.output_dir)
    if folder_holds_a_run(output_dir) and not continues_a_run(args) and not args.overwrite_output_dir:
        parser.error(already_holds_a_run(output_dir))


def take_recorded_dataset(args: argparse.Namespace, tokenizer_folder: str | None) -> None:
    """
    Default the recipe's `--dataset`, `--image_column`, `--label_column` and `--dataset_dir` to what the tokenizer in
    `tokenizer_folder` records it was trained on (`choose_dataset`: what the user gave wins; Fashion-MNIST only where
    nothing is recorded), in place, with `args.dataset_reason` saying which and why.
    """
    record = DatasetRecord.from_folder(tokenizer_folder) if tokenizer_folder else None
    choice = choose_dataset(
        args.dataset, record, recorded_by="the tokenizer" if tokenizer_folder else "a tokenizer (no --vqvae)",
        image_column=args.image_column, label_column=args.label_column, data_dir=args.dataset_dir,
    )  # fmt: skip
    args.dataset, args.image_column, args.label_column = choice.source, choice.image_column, choice.label_column
    args.dataset_dir, args.dataset_reason = choice.data_dir, choice.reason


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
        size, note = held_out_size(len(train), args.validation_size)
        held_out = train.train_test_split(test_size=size, seed=args.seed)
        train, validation = held_out["train"], held_out["test"]
        PartialState().print(
            f"No {args.validation_split!r} split: holding out {len(validation)} of {len(train) + len(validation)} "
            f"training examples{note}."
        )
    for name, split, flag in ((args.train_split, train, "--train_split"), (args.validation_split, validation,
                                                                          "--validation_split")):  # fmt: skip
        # An empty split used to end in an endless loop or a division by zero, minutes in.
        if isinstance(split, datasets.Dataset) and len(split) == 0:
            raise ValueError(
                f"The {flag} {name!r} has no examples: point the recipe at a dataset with rows in it (the dataset "
                "may have been written by a run that was stopped or given no images)."
            )
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_validation_samples is not None:
        validation = validation.select(range(min(args.max_validation_samples, len(validation))))
    return train, validation


def held_out_size(num_rows: int, validation_size: int, flag: str = "--validation_size") -> tuple[int, str]:
    """
    How many of `num_rows` training examples to hold out for validation: `validation_size`, at most a fifth of the
    rows (at least one), so that a small dataset keeps most of its images for training. Returns the size and, when
    it was capped, the note that says so (naming `flag`, the option that asked for `validation_size`).
    """
    if num_rows < 2:
        raise ValueError(
            f"The training split has {num_rows} example(s): too few to hold any out for validation. Add images or "
            "give the data a validation split of its own (--validation_split)."
        )
    size = min(validation_size, max(1, num_rows // 5))
    note = f" ({flag} {validation_size} capped at a fifth of the rows)" if size < validation_size else ""
    return size, note


def tracker_config(args: argparse.Namespace) -> dict:
    """The flags and `model.FIELD`s that trackers such as TensorBoard accept: scalars only."""
    scalar = (int, float, str, bool)
    config = {name: value for name, value in vars(args).items() if isinstance(value, scalar)}
    config.update({f"model.{name}": value for name, value in args.model.items() if isinstance(value, scalar)})
    return config


# Settings that say where and how a run is kept, not what it trains: left out of the config hash.
_NOT_CONFIG = (
    "config",
    "dataset_reason",  # why --dataset is what it is (given or recorded), not what it is
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "resume_from_other_run",
    "report_to",
    "save_on_each_node",
)


def run_config(args: argparse.Namespace | dict) -> dict:
    """The settings of a run that its checkpoints record (as run_config.json, hashed in the manifest)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return json.loads(json.dumps({name: value for name, value in values.items() if name not in _NOT_CONFIG}, default=str))
