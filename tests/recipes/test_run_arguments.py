"""The flags every recipe shares, parsed in this process as each recipe parses them: one definition, one set of checks."""

import argparse
import re

import pytest
import torch
import yaml

from larp_hf import training

from .test_train_vqvae import import_recipe


# The arguments each recipe needs to parse at all (the prior's tokenizer is not loaded by parse_args).
NEEDS = {"train_vqvae": [], "train_prior": ["--vqvae", "tokenizer"], "train_classifier": []}
# Counted in optimizer steps, validated and checkpointed every N steps; the classifier counts epochs.
STEP_RECIPES = ["train_vqvae", "train_prior"]


@pytest.fixture(autouse=True)
def _in_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipes' relative default output_dir must not meet a run of the user's


def parse(recipe: str, *argv) -> argparse.Namespace:
    return import_recipe(recipe).parse_args([*NEEDS[recipe], *map(str, argv)])


def refusal(recipe: str, capsys, *argv) -> str:
    """The error with which `recipe`'s parse_args refuses argv: parser.error, before any work."""
    with pytest.raises(SystemExit) as exit_info:
        parse(recipe, *argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def config_file(tmp_path, **values) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def help_section(recipe: str, title: str, capsys) -> str:
    """A section of `recipe`'s --help, the defaults each recipe states for itself left out."""
    with pytest.raises(SystemExit):
        parse(recipe, "--help")
    text = capsys.readouterr().out
    section = " ".join(text[text.index(f"\n{title}:\n") :].split("\n\n")[0].split())
    for flag in ("output_dir", "eval_batch_size", "learning_rate", "train_batch_size", "lr_warmup_steps"):
        section = re.sub(rf"(--{flag} {flag.upper()}.*?)\(default: [^)]*\)", r"\1(default: ...)", section)
    return section


def test_the_shared_flags_are_declared_once_with_the_same_defaults(capsys):
    shared = argparse.ArgumentParser()
    training.add_run_arguments(shared, output_dir="out", eval_batch_size=1, learning_rate=1.0)
    own_defaults = {"output_dir", "eval_batch_size", "learning_rate"}  # each recipe states its own
    defaults = {action.dest: action.default for action in shared._actions if action.dest not in own_defaults | {"help"}}
    assert {"seed", "checkpoints_total_limit", "mixed_precision", "report_to", "dataloader_num_workers"} <= set(defaults)
    for recipe in NEEDS:
        args = vars(parse(recipe))
        assert {name: args[name] for name in defaults} == defaults, recipe
        assert own_defaults <= set(args)
    # Same help, types and choices: one declaration, not copies that drift.
    assert len({help_section(recipe, "run", capsys) for recipe in NEEDS}) == 1
    for title in ("optimizer steps", "splits"):
        assert len({help_section(recipe, title, capsys) for recipe in STEP_RECIPES}) == 1
    steps = [{name: vars(parse(recipe))[name] for name in ("max_steps", "validation_steps", "checkpointing_steps")}
             for recipe in STEP_RECIPES]  # fmt: skip
    assert steps[0] == steps[1] == {"max_steps": 1000, "validation_steps": 250, "checkpointing_steps": 500}


@pytest.mark.parametrize("recipe", STEP_RECIPES)
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpointing_steps", 0], "argument --checkpointing_steps: must be at least 1, got '0'"),
        (["--validation_steps", 0], "argument --validation_steps: must be at least 1, got '0'"),
        (["--max_steps", -5], "argument --max_steps: must be at least 1, got '-5'"),
        (["--max_steps", 2.7], "argument --max_steps: must be an integer, got '2.7'"),
        (["--train_batch_size", 0], "argument --train_batch_size: must be at least 1"),
        (["--lr_warmup_steps", -1], "argument --lr_warmup_steps: must be at least 0"),
        (["--max_grad_norm", -1], "argument --max_grad_norm: must be 0 or more"),
        (["--validation_size", 0], "argument --validation_size: must be at least 1"),
    ],
)
def test_step_counts_that_are_not_positive_integers_are_refused(recipe, argv, message, capsys):
    assert message in refusal(recipe, capsys, *argv)


@pytest.mark.parametrize("recipe", list(NEEDS))
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eval_batch_size", 0], "argument --eval_batch_size: must be at least 1"),
        (["--gradient_accumulation_steps", 0], "argument --gradient_accumulation_steps: must be at least 1"),
        (["--learning_rate", 0], "argument --learning_rate: must be positive, got '0'"),
        (["--learning_rate", "nan"], "argument --learning_rate: must be finite"),
        (["--checkpoints_total_limit", -1], "argument --checkpoints_total_limit: must be at least 0"),
        (["--dataloader_num_workers", -2], "argument --dataloader_num_workers: must be at least 0"),
        (["--lr_scheduler", "cosin"], "argument --lr_scheduler: invalid choice: 'cosin'"),
        (["--weight_decay", -0.1], "argument --weight_decay: must be 0 or more"),
    ],
)
def test_shared_counts_and_rates_out_of_range_are_refused_in_every_recipe(recipe, argv, message, capsys):
    assert message in refusal(recipe, capsys, *argv)


def test_the_classifier_counts_epochs_and_refuses_step_flags(capsys):
    assert "argument --epochs: must be at least 1, got '0'" in refusal("train_classifier", capsys, "--epochs", 0)
    assert "argument --batch_size: must be at least 1" in refusal("train_classifier", capsys, "--batch_size", 0)
    # It tests and checkpoints after every epoch: a step schedule would be silently ignored, so it is refused.
    for flag in ("--checkpointing_steps", "--validation_steps"):
        assert f"unrecognized argument '{flag}'" in refusal("train_classifier", capsys, flag, 0)


@pytest.mark.parametrize(
    "recipe, values, message",
    [
        ("train_vqvae", {"max_steps": 2.7}, "sets max_steps: 2.7: --max_steps must be an integer, got '2.7'"),
        ("train_prior", {"max_steps": 2.7}, "sets max_steps: 2.7: --max_steps must be an integer, got '2.7'"),
        ("train_classifier", {"epochs": 2.7}, "sets epochs: 2.7: --epochs must be an integer, got '2.7'"),
        ("train_classifier", {"max_steps": 3}, "sets unknown options ['max_steps']"),
        ("train_prior", {"checkpointing_steps": 0}, "sets checkpointing_steps: 0: --checkpointing_steps must be at least 1"),
        ("train_vqvae", {"validation_steps": 0}, "sets validation_steps: 0: --validation_steps must be at least 1"),
        ("train_vqvae", {"train_batch_size": True}, "--train_batch_size takes a value, not a boolean"),
        ("train_prior", {"learning_rate": "fast"}, "--learning_rate must be a number, got 'fast'"),
        ("train_prior", {"adam_beta1": "high"}, "--adam_beta1 takes a float"),
        ("train_classifier", {"mixed_precision": "fp17"}, "--mixed_precision is one of auto, no, fp16, bf16"),
        ("train_classifier", {"mixed_precision": False}, "not a boolean (quote an unquoted no"),
        ("train_vqvae", {"random_flip": "no"}, "--random_flip is a switch: true or false"),
        ("train_vqvae", {"max_steps": None}, "--max_steps needs a value"),
        ("train_classifier", {"feature_dim": [8, 16]}, "model fields go under `model:`"),
    ],
)
def test_config_values_are_checked_as_the_same_flags_on_the_command_line(recipe, values, message, tmp_path, capsys):
    assert message in refusal(recipe, capsys, "--config", config_file(tmp_path, **values))


def test_config_values_are_converted_as_on_the_command_line(tmp_path):
    values = {"max_steps": 3, "learning_rate": "1e-3", "weight_decay": 0, "max_train_samples": None, "streaming": True}
    args = parse("train_vqvae", "--config", config_file(tmp_path, **values))
    assert (args.max_steps, args.learning_rate, args.weight_decay, args.max_train_samples) == (3, 1e-3, 0.0, None)
    assert type(args.weight_decay) is float and args.streaming is True
    args = parse("train_classifier", "--config", config_file(tmp_path, hidden_channels="8,16", mixed_precision="no"))
    assert args.model == {"hidden_channels": [8, 16]} and args.mixed_precision == "no"
    # The command line still wins over the file.
    assert parse("train_prior", "--config", config_file(tmp_path, max_steps=7), "--max_steps", 9).max_steps == 9


def test_the_classifier_holds_its_pixels_as_uint8(tiny_image_dataset_dir):
    train_classifier = import_recipe("train_classifier")
    args = train_classifier.parse_args(["--dataset", tiny_image_dataset_dir, "--image_size", "16"])
    train, test, image_processor, model_config, _ = train_classifier.load_splits(args)
    num_classes = model_config.num_classes
    # uint8 in memory, as the tokenizer recipe holds them: int64 would take eight times the memory.
    assert train.pixels.dtype == test.pixels.dtype == torch.uint8
    assert train.pixels.shape == (64, 1, 16, 16) and test.pixels.shape == (16, 1, 16, 16) and num_classes == 2
    batch = train_classifier.collate([train[0], train[1]], image_processor)
    assert batch["pixel_values"].dtype == torch.float32 and batch["pixel_values"].shape == (2, 1, 16, 16)
    assert batch["labels"].tolist() == train.labels[:2].tolist()
