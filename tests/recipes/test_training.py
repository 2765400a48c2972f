"""larp_hf.training's pieces that need no Accelerator: the train/validation split and the run-folder check."""

import argparse

import datasets
import pytest

from larp_hf import training


def numbers(count: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"x": list(range(count))})


def data_flags(**flags) -> argparse.Namespace:
    defaults = {"train_split": "train", "validation_split": "test", "validation_size": 4, "seed": 0}
    return argparse.Namespace(**{**defaults, "max_train_samples": None, "max_validation_samples": None, **flags})


def test_select_splits_holds_out_a_seeded_validation_set_only_when_there_is_none():
    splits = datasets.DatasetDict({"train": numbers(20), "test": numbers(5)})
    train, validation = training.select_splits(splits, data_flags(max_train_samples=8))
    assert list(train["x"]) == list(range(8)) and list(validation["x"]) == list(range(5))

    train, validation = training.select_splits(numbers(20), data_flags(validation_split="validation", seed=1))
    again = training.select_splits(numbers(20), data_flags(validation_split="validation", seed=1))
    assert (len(train), len(validation)) == (16, 4) and list(validation["x"]) == list(again[1]["x"])
    assert sorted([*train["x"], *validation["x"]]) == list(range(20))
    _, validation = training.select_splits(numbers(20), data_flags(max_validation_samples=2))
    assert len(validation) == 2

    with pytest.raises(ValueError, match="no --train_split 'training'; the splits are \\['test', 'train'\\]"):
        training.select_splits(splits, data_flags(train_split="training"))


def test_a_folder_with_checkpoints_or_metrics_holds_a_run(tmp_path):
    parser = argparse.ArgumentParser()

    def check(folder, **flags):
        args = argparse.Namespace(output_dir=str(folder), resume_from_checkpoint=None, overwrite_output_dir=False)
        training.refuse_to_overwrite_a_run(parser, argparse.Namespace(**{**vars(args), **flags}))

    check(tmp_path / "new")
    (tmp_path / "run" / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(SystemExit):
        check(tmp_path / "run")
    check(tmp_path / "run", resume_from_checkpoint="latest")
    check(tmp_path / "run", overwrite_output_dir=True)
    (tmp_path / "finished").mkdir()
    (tmp_path / "finished" / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit):
        check(tmp_path / "finished")
