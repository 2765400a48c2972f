"""
encode_dataset.py as users run it: one process, two processes in torchrun's world, workers that decode, a broken
image; each run is the script's main in processes of its own forked from a preloaded server
(tests/recipes/forked_runs.py). conftest.py's `tokens` runs it in a fresh interpreter.
"""

import json

import datasets
import pytest

from .forked_runs import ROOT, run_recipe


def encode(*args, processes: int = 1, expect_success: bool = True):
    return run_recipe("encode_dataset", *args, processes=processes, expect_success=expect_success)


@pytest.fixture(scope="module")
def vqvae(tokens):
    return tokens[0]  # conftest.py's tiny tokenizer


def assert_same_rows(left: datasets.DatasetDict, right: datasets.DatasetDict):
    assert set(left) == set(right)
    for split in left:
        assert left[split].features == right[split].features, split
        assert left[split].to_dict() == right[split].to_dict(), split


def test_two_processes_write_the_token_dataset_one_process_writes(vqvae, tiny_image_dataset_dir, tmp_path):
    # Batches of 16: the 64 training images make 4 batches, 2 per process; the 16 test images 1, so the second
    # process has no part of the test split.
    common = ["--vqvae", vqvae, "--dataset", tiny_image_dataset_dir, "--batch_size", 16]
    encode(*common, "--output_dir", tmp_path / "one")
    result = encode(*common, "--output_dir", tmp_path / "two", processes=2)
    assert "2 process(es)" in result.stdout
    encode(*common, "--output_dir", tmp_path / "workers", "--num_proc", 2)
    one = datasets.load_from_disk(str(tmp_path / "one"))
    assert (len(one["train"]), len(one["test"])) == (64, 16)
    assert_same_rows(datasets.load_from_disk(str(tmp_path / "two")), one)
    assert_same_rows(datasets.load_from_disk(str(tmp_path / "workers")), one)
    summary = json.loads((tmp_path / "two" / "larp_token_dataset.json").read_text())
    assert summary["num_processes"] == 2 and summary["splits"] == {"train": 64, "test": 16}


def test_a_broken_image_is_named_and_leaves_the_old_token_dataset_whole(vqvae, tiny_image_dataset_dir, tmp_path):
    output_dir = tmp_path / "tokens"
    encode("--vqvae", vqvae, "--dataset", tiny_image_dataset_dir, "--output_dir", output_dir)
    before = datasets.load_from_disk(str(output_dir))

    images = datasets.load_from_disk(tiny_image_dataset_dir)
    raw = images["train"].cast_column("image", datasets.Image(decode=False))
    broken_rows = list(raw["image"])
    broken_rows[37] = {"bytes": b"\x89PNG\r\n\x1a\n and then nothing", "path": None}
    broken = datasets.DatasetDict(
        {"train": raw.remove_columns("image").add_column("image", broken_rows, feature=datasets.Image()),
         "test": images["test"]}
    )  # fmt: skip
    broken.save_to_disk(str(tmp_path / "broken"))
    for extra in ([], ["--num_proc", 2]):
        result = encode("--vqvae", vqvae, "--dataset", tmp_path / "broken", "--output_dir", output_dir, *extra, expect_success=False)
        assert result.returncode != 0
        assert "Row 37 of the dataset holds an image that cannot be decoded" in result.stderr, result.stderr[-2000:]
    assert_same_rows(datasets.load_from_disk(str(output_dir)), before)

    # Written again over itself: replaced by a rename, nothing left beside it.
    encode("--vqvae", vqvae, "--dataset", tiny_image_dataset_dir, "--output_dir", output_dir, "--no_flip_augment")
    assert datasets.load_from_disk(str(output_dir))["train"].column_names == ["input_ids", "label"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken", "tokens"]
    assert ROOT.is_dir()
