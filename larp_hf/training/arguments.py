"""A recipe's flags: parsed with `--config`, checked, and read into the splits and the settings a run records."""

import argparse
import dataclasses
import json
from pathlib import Path

import datasets
import yaml
from accelerate import PartialState

from .accelerator import MIXED_PRECISION_CHOICES
from .layout import already_holds_a_run, folder_holds_a_run


def add_mixed_precision_argument(parser: argparse.ArgumentParser):
    """`--mixed_precision`, the same in every recipe: `make_accelerator` resolves its default, "auto"."""
    parser.add_argument(
        "--mixed_precision", type=str, default="auto", choices=MIXED_PRECISION_CHOICES,
        help="auto: bf16 autocast on a CPU that does bf16 in hardware, else what `accelerate launch` was told; "
        "no: fp32.",
    )  # fmt: skip


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


def refuse_to_overwrite_a_run(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """
    A folder that holds a run is continued or replaced explicitly, never by accident. An early check for
    `parse_args`; `claim_output_dir` checks again under the folder's lock.
    """
    output_dir = Path(args.output_dir)
    if folder_holds_a_run(output_dir) and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
        parser.error(already_holds_a_run(output_dir))


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


# Settings that say where and how a run is kept, not what it trains: left out of the config hash.
_NOT_CONFIG = ("config", "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "report_to", "save_on_each_node")


def run_config(args: argparse.Namespace | dict) -> dict:
    """The settings of a run that its checkpoints record (as run_config.json, hashed in the manifest)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return json.loads(json.dumps({name: value for name, value in values.items() if name not in _NOT_CONFIG}, default=str))
