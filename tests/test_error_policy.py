"""One error policy for `larp-hf` and the recipes: what, where and the fix in a line or two; a traceback only with
--debug; Ctrl-C exits 130 saying what was kept; outputs checked before any work; work done is kept."""

import errno
import os
import subprocess
import sys
import tracemalloc

import datasets
import pytest
import yaml

from larp_hf import LarpPipeline, cli, errors
from larp_hf.pipelines import samples
from larp_hf.training import select_splits

from .conftest import make_tiny_pipeline


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy") / "pipe"
    make_tiny_pipeline(num_classes=3).save_pretrained(folder, sample_grid=False)
    return folder


@pytest.fixture
def no_loading(monkeypatch):
    """Loading the pipeline is the start of the work: a refusal must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the refusal")

    monkeypatch.setattr(LarpPipeline, "from_pretrained", refuse)


def cli_exit(argv) -> SystemExit:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(arg) for arg in argv])
    return exit_info.value


def test_known_failures_are_told_with_the_path_and_the_fix(tmp_path):
    def raised(action) -> BaseException:
        try:
            action()
        except BaseException as error:  # noqa: BLE001 - the point is to describe whatever was raised
            return error
        raise AssertionError("nothing was raised")

    (tmp_path / "file").write_text("x")
    missing = raised(lambda: open(tmp_path / "missing.yaml"))
    assert errors.describe_error(missing) == (
        f"no such file or folder: {tmp_path / 'missing.yaml'}. Check the path (a typo, or a folder that was moved?)."
    )
    assert f"{tmp_path} is a folder, but a file is expected" in errors.describe_error(raised(lambda: open(tmp_path)))
    not_folder = raised(lambda: open(tmp_path / "file" / "x"))
    assert "is (or lies under) a file, but a folder is expected" in errors.describe_error(not_folder)
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/out.png")
    assert errors.describe_error(denied).startswith("permission denied: /srv/out.png. Pick a location")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/mnt/out")
    assert errors.describe_error(full) == "no space left on the disk of /mnt/out: free some space or write elsewhere."
    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/x")
    assert "read-only file system: /ro/x" in errors.describe_error(read_only)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("max_steps: 3\n  seed: [1\n")
    syntax = raised(lambda: yaml.safe_load(bad_yaml.open()))
    assert errors.describe_error(syntax).startswith(f"{bad_yaml}, line 2, column 7: invalid YAML")
    # A library's own sentence is kept as it is.
    assert errors.describe_error(FileNotFoundError("The token dataset x has no `input_ids`.")).startswith("The token")


def test_an_unexpected_error_is_one_line_asking_for_a_report_and_debug_shows_the_traceback(monkeypatch):
    def crash():
        raise RuntimeError("boom\nsecond line")

    with pytest.raises(SystemExit) as exit_info:
        errors.run_command(crash, debug=False)
    message = exit_info.value.code
    assert message.startswith("error: unexpected RuntimeError: boom (at test_error_policy.py:")
    assert "\n" not in message and "--debug" in message and "please report it" in message
    with pytest.raises(RuntimeError, match="boom"):
        errors.run_command(crash, debug=True)
    monkeypatch.setenv("LARP_HF_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        errors.run_command(crash)


def test_an_unexpected_error_in_the_cli_has_no_traceback_unless_debug(pipeline_dir, monkeypatch):
    monkeypatch.delenv("LARP_HF_DEBUG", raising=False)

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(LarpPipeline, "from_pretrained", crash)
    assert "unexpected RuntimeError: boom" in cli_exit(["info", pipeline_dir]).code
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["info", str(pipeline_dir), "--debug"])


def test_ctrl_c_exits_130_and_says_what_was_kept(pipeline_dir, tmp_path, monkeypatch, capsys):
    def interrupt(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(LarpPipeline, "__call__", interrupt)
    argv = ["generate", pipeline_dir, "--num-images", "2", "--image-dir", tmp_path / "pngs"]
    assert cli_exit(argv).code == 130
    assert f"interrupted: the PNG files written so far in {tmp_path / 'pngs'} are kept" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        cli.main([*map(str, argv), "--debug"])


def test_a_recipe_script_takes_debug_out_of_its_arguments_and_follows_the_policy(monkeypatch, capsys):
    seen = []

    def main():
        seen.append(list(sys.argv[1:]))
        raise ValueError("The --train_split 'train' has no examples.")

    monkeypatch.delenv("LARP_HF_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["train_prior.py", "--max_steps", "3"])
    with pytest.raises(SystemExit, match=r"^error: The --train_split 'train' has no examples\.$"):
        errors.run_script(main)
    monkeypatch.setattr(sys, "argv", ["train_prior.py", "--debug", "--max_steps", "3"])
    with pytest.raises(ValueError):
        errors.run_script(main)
    assert seen == [["--max_steps", "3"], ["--max_steps", "3"]]

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        errors.run_script(interrupted, interrupted=errors.TRAINING_INTERRUPTED)
    assert exit_info.value.code == 130 and "--resume_from_checkpoint latest" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "PIPE", "--num-images", "0"],
        ["generate", "PIPE", "--batch-size", "0"],
        ["generate", "PIPE", "--num-images", "-3"],
        ["generate", "PIPE", "--nrow", "0"],
        ["evaluate", "PIPE", "--batch-size", "0", "--output-dir", "OUT"],
        ["evaluate", "PIPE", "--num-samples", "0", "--output-dir", "OUT"],
        ["sweep", "PIPE", "--batch-size", "0", "--output-dir", "OUT"],
    ],
)
def test_zero_and_negative_counts_are_argument_errors_before_any_work(argv, pipeline_dir, tmp_path, no_loading, capsys):
    argv = [{"PIPE": pipeline_dir, "OUT": tmp_path / "out"}.get(arg, arg) for arg in argv]
    assert cli_exit(argv).code == 2
    assert "must be at least" in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_refused_before_the_pipeline_is_loaded(pipeline_dir, tmp_path, no_loading,
                                                                                  monkeypatch):  # fmt: skip
    (tmp_path / "a_file").write_text("x")
    folder_as_grid = cli_exit(["generate", pipeline_dir, "--output", tmp_path])
    assert folder_as_grid.code == f"error: `--output` {tmp_path} is a folder, but a file is expected there."
    under_a_file = cli_exit(["generate", pipeline_dir, "--image-dir", tmp_path / "a_file" / "pngs"])
    assert "`--image-dir`" in under_a_file.code and "which is a file, not a folder" in under_a_file.code
    evaluation = cli_exit(["evaluate", pipeline_dir, "--output-dir", tmp_path / "a_file"])
    assert "`--output-dir`" in evaluation.code and "is a file, but a folder is expected" in evaluation.code

    def read_only(*args, **kwargs):  # what a read-only mount answers (root ignores permission bits, not EROFS)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(errors.tempfile, "TemporaryFile", read_only)
    refusal = cli_exit(["generate", pipeline_dir, "--output", tmp_path / "ro" / "grid.png"]).code
    assert refusal == (f"error: `--output` {tmp_path / 'ro' / 'grid.png'} cannot be written (Read-only file system in "
                       f"{tmp_path}): pick a writable location.")  # fmt: skip


def test_a_mistyped_local_model_path_is_named_not_sent_to_the_hub(tmp_path, no_loading):
    refusal = cli_exit(["info", tmp_path / "pipe-typo"]).code
    assert refusal.startswith(f"error: `MODEL` '{tmp_path / 'pipe-typo'}' is not there: no such file or folder")
    (tmp_path / "weights.bin").write_text("x")
    weights = tmp_path / "weights.bin"
    refusal = cli_exit(["assemble", "--vqvae", weights, "--prior", tmp_path, "--output", tmp_path / "o"])
    assert "`--vqvae`" in refusal.code and "is a file, but a model folder is expected" in refusal.code


def test_generate_keeps_the_dataset_when_the_grid_cannot_be_written(pipeline_dir, tmp_path, monkeypatch):
    pipeline = LarpPipeline.from_pretrained(pipeline_dir)

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(samples, "open_atomic", disk_full)
    with pytest.raises(OSError):
        samples.save_samples(pipeline, 4, grid_path=tmp_path / "g.png", output_dataset=tmp_path / "ds", seed=0)
    kept = datasets.load_from_disk(str(tmp_path / "ds"))
    assert len(kept) == 4 and kept["label"] == [0, 1, 2, 0]


def test_classes_in_turn_are_not_spelled_out_for_the_whole_request_before_sampling(pipeline_dir, tmp_path):
    class Stop(Exception):
        pass

    class FirstCallStops:
        num_classes = 3
        class_names = None

        def class_indices(self, labels):
            return labels

        def __call__(self, **kwargs):
            assert kwargs["class_labels"] == [0, 1]  # the first batch's labels, counted from image 0
            raise Stop

    tracemalloc.start()
    try:
        with pytest.raises(Stop):
            samples.save_samples(FirstCallStops(), 10**6, image_dir=tmp_path / "pngs", batch_size=2, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # a list of 10^6 labels alone is 8 MB


def test_generate_says_how_large_a_request_is_after_its_first_batch(pipeline_dir, tmp_path, capsys):
    cli.main(["generate", str(pipeline_dir), "--num-images", "5", "--batch-size", "2", "--image-dir",
              str(tmp_path / "pngs")])  # fmt: skip
    err = capsys.readouterr().err
    assert "Sampling 5 images: about 3 batches of 2, ~" in err and "at the first batch's pace" in err


def test_an_empty_split_is_refused_by_name():
    empty = datasets.Dataset.from_dict({"input_ids": [], "label": []})
    args = type("Args", (), {"train_split": "train", "validation_split": "test", "max_train_samples": None,
                             "max_validation_samples": None, "seed": 0})()  # fmt: skip
    with pytest.raises(ValueError, match="The --train_split 'train' has no examples"):
        select_splits(datasets.DatasetDict({"train": empty, "test": empty}), args)


def test_a_closed_stdout_ends_the_command_quietly(pipeline_dir):
    # `larp-hf info | head`: the reader goes away; a real pipe, as the shell makes it.
    command = f"{sys.executable} -m larp_hf.cli info {pipeline_dir} | true"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
