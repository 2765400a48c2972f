"""
The recipes as a user expects them (issue 22, item 4): a resume takes its model from the checkpoint, list flags take
one syntax, `--help` shows the defaults, trackers are checked before training and get the validation grids, fp16 on a
CPU is refused, and a mistyped local path is named at once.
"""

import argparse
import json

import pytest

from larp_hf import training
from larp_hf.flags import DefaultsHelpFormatter, list_of, parse_list
from larp_hf.training import checkpoint_format

from .test_mixed_precision import fresh_accelerate_state  # noqa: F401 (a fixture)
from .test_run_arguments import NEEDS, config_file, parse, refusal
from .test_train_vqvae import tiny_config  # noqa: F401 (a fixture)


@pytest.fixture(autouse=True)
def _in_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipes' relative default output_dir must not meet a run of the user's


def fake_checkpoint(output_dir, run_config: dict, step: int = 2):
    """A checkpoint folder whose manifest lists its run_config: all that parse_args reads of it."""
    folder = output_dir / training.CHECKPOINTS_DIR / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    checkpoint_format.write_state(folder, "run_config", run_config)
    lineage = [{"run": "r", "from_step": 0}]
    checkpoint_format.write_manifest(folder, step, lineage, checkpoint_format.config_sha256(run_config), 1)
    return folder


# 1. Resuming takes the model from the checkpoint.


def test_a_resume_takes_the_model_settings_from_the_checkpoint(tmp_path, capsys):
    fake_checkpoint(tmp_path / "run", {"model": {"hidden_channels": [8, 8], "codebook_size": 16}})
    args = parse("train_vqvae", "--output_dir", tmp_path / "run", "--resume_from_checkpoint", "latest")
    assert args.model == {"hidden_channels": [8, 8], "codebook_size": 16}
    assert "its model settings are used (model.hidden_channels=[8, 8], model.codebook_size=16)" in capsys.readouterr().out
    # Repeating them, in either list syntax, is allowed; contradicting one is refused, naming it and both values.
    same = parse("train_vqvae", "--output_dir", tmp_path / "run", "--resume_from_checkpoint", "latest",
                 "--model.hidden_channels", "[8,8]", "--model.codebook_size", 16)  # fmt: skip
    assert same.model == args.model
    message = refusal("train_vqvae", capsys, "--output_dir", tmp_path / "run", "--resume_from_checkpoint", "latest",
                      "--model.codebook_size", 32)  # fmt: skip
    assert "checkpoint-2 has model.codebook_size=16, you asked --model.codebook_size 32" in message
    message = refusal("train_vqvae", capsys, "--output_dir", tmp_path / "run", "--resume_from_checkpoint", "latest",
                      "--model.codebook_dim", 2)  # fmt: skip
    assert "checkpoint-2 has model.codebook_dim at its default, you asked --model.codebook_dim 2" in message


def test_a_resumed_prior_keeps_its_preset_and_a_classifier_its_shorthand_flags(tmp_path, capsys):
    saved = {"preset": "tiny", "architecture": "gpt2", "num_classes": 3, "model": {"n_layer": 1}}
    fake_checkpoint(tmp_path / "prior", saved)
    resume = ["--output_dir", tmp_path / "prior", "--resume_from_checkpoint", "latest"]
    args = parse("train_prior", *resume)
    assert (args.preset, args.architecture, args.num_classes, args.model) == ("tiny", "gpt2", 3, {"n_layer": 1})
    assert "checkpoint-2 has preset='tiny', you asked --preset small" in refusal("train_prior", capsys, *resume, "--preset", "small")
    message = refusal("train_prior", capsys, *resume, "--config", config_file(tmp_path, num_classes=10))
    assert "checkpoint-2 has num_classes=3, you asked num_classes: 10 in " in message

    fake_checkpoint(tmp_path / "classifier", {"model": {"image_size": 16, "hidden_channels": [8, 16]}})
    resume = ["--output_dir", tmp_path / "classifier", "--resume_from_checkpoint", "latest"]
    assert parse("train_classifier", *resume).model == {"image_size": 16, "hidden_channels": [8, 16]}
    assert parse("train_classifier", *resume, "--hidden_channels", "8,16").model["hidden_channels"] == [8, 16]
    message = refusal("train_classifier", capsys, *resume, "--image_size", 32)
    assert "checkpoint-2 has model.image_size=16, you asked --image_size 32" in message


def test_a_prior_resumed_without_its_model_flags_trains_on(prior_config_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from .test_train_prior import train_prior

    common = ["--config", prior_config_file, "--max_train_samples", 24, "--output_dir", tmp_path / "run"]
    train_prior(*common, "--model.n_layer", 1, "--max_steps", 1)
    # Before, this died in a size-mismatch traceback: the preset's layer count is not the checkpoint's.
    result = train_prior(*common, "--max_steps", 2, "--resume_from_checkpoint", "latest")
    assert "its model settings are used (" in result.stdout and "model.n_layer=1" in result.stdout
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run").config.n_layer == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 2


# 2. One list syntax.


@pytest.mark.parametrize("text", ["32,64", "[32,64]", "[32, 64]", " 32 , 64 "])
def test_every_list_spelling_reads_the_same(text):
    assert parse_list(text) == [32, 64] and list_of(int)(text) == [32, 64]
    assert parse_list(text, float) == [32.0, 64.0]


def test_list_flags_of_recipes_and_cli_share_the_syntax(tmp_path, capsys):
    from larp_hf.cli import build_parser

    for text in ("8,16", "[8,16]"):
        assert parse("train_vqvae", "--model.hidden_channels", text).model == {"hidden_channels": [8, 16]}
        assert parse("train_classifier", "--hidden_channels", text).model == {"hidden_channels": [8, 16]}
        assert parse("train_classifier", "--model.hidden_channels", text).model == {"hidden_channels": [8, 16]}
        assert build_parser().parse_args(["sweep", "m", "--output-dir", "o", "--top-k", text]).top_k == [8, 16]
    assert parse("train_classifier", "--config", config_file(tmp_path, hidden_channels=[8, 16])).model == {
        "hidden_channels": [8, 16]
    }
    assert "--model.hidden_channels: expected one or comma-separated integers" in refusal(
        "train_vqvae", capsys, "--model.hidden_channels", "8;16"
    )
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated numbers"):
        parse_list("0.7,warm", float)


# 3. --help shows the defaults.


@pytest.mark.parametrize("recipe", list(NEEDS))
def test_recipe_help_shows_defaults(recipe, capsys):
    with pytest.raises(SystemExit):
        parse(recipe, "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED (default: 0)" in text and "(default: auto)" in text
    assert "--overwrite_output_dir Start afresh" in text and "(default: False)" not in text  # switches off by default


def test_cli_help_shows_defaults_in_every_sub_command(capsys):
    from larp_hf.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert sub.formatter_class is DefaultsHelpFormatter, name
    text = " ".join(commands.choices["generate"].format_help().split())
    assert "--num-images NUM_IMAGES (default: 64)" in text
    assert "default: the pipeline's sampling default (default" not in text  # a help that says its default is kept
    text = " ".join(commands.choices["sweep"].format_help().split())
    assert "(default: [0, 50, 100, 200])" in text


# 4. Trackers.


def test_unknown_or_missing_trackers_are_refused_before_training(monkeypatch, capsys):
    from larp_hf.training import accelerator as training_accelerator

    assert "--report_to 'nosuch' is not a tracker Accelerate knows" in refusal("train_vqvae", capsys, "--report_to", "nosuch")
    monkeypatch.setattr(training_accelerator, "get_available_trackers", lambda: [])
    message = refusal("train_prior", capsys, "--report_to", "tensorboard")
    assert "--report_to 'tensorboard': tensorboard is not installed (pip install tensorboard); installed trackers: none" in message
    with pytest.raises(ValueError, match="`log_with` 'wandb'"):
        training.check_trackers("wandb")


# 5. fp16 on a CPU.


def test_fp16_on_a_cpu_is_refused_naming_bf16_and_no():
    with pytest.raises(ValueError, match=r"fp16 needs a GPU.*Use bf16 \(CPU autocast\) or no \(fp32\)"):
        training.resolve_mixed_precision("fp16", "cpu")
    assert training.resolve_mixed_precision("fp16", "cuda") == ("fp16", "as asked")


def test_fp16_on_a_cpu_is_refused_by_the_recipe_and_when_the_launcher_asked_for_it(
    tmp_path, monkeypatch, fresh_accelerate_state
):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    args = parse("train_vqvae", "--mixed_precision", "fp16", "--output_dir", tmp_path / "run")
    with pytest.raises(SystemExit, match=r"error: --mixed_precision fp16 needs a GPU; .* Use bf16 \(CPU autocast\) or no"):
        training.start_run(args)
    assert not (tmp_path / "run").exists()  # refused before the run claims its folder
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # what `accelerate launch --mixed_precision fp16` sets
    with pytest.raises(ValueError, match="fp16 \\(`accelerate launch`'s mixed_precision\\) needs a GPU"):
        training.make_accelerator(tmp_path / "launched", seed=0, mixed_precision=None)


# 6. A missing local path.


def test_a_missing_local_path_is_named_before_the_hub_is_asked(tmp_path, capsys, monkeypatch):
    from larp_hf import LarpPipeline, load_tokenizer
    from larp_hf.local_paths import looks_local

    (tmp_path / "outputs").mkdir()
    assert all(map(looks_local, ["./x", "../x", "/x", "~/x", "outputs/x", "a/b/c"]))
    assert not any(map(looks_local, ["owner/name", "fashion_mnist", "gpt2"]))

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.setattr("larp_hf.pipelines.pipeline_larp.snapshot_download", no_hub)
    monkeypatch.setattr("transformers.utils.cached_file", no_hub)
    with pytest.raises(FileNotFoundError, match=r"`path_or_repo_id` './mistyped' is not there"):
        load_tokenizer("./mistyped")
    with pytest.raises(FileNotFoundError, match=r"`pretrained_model_name_or_path` 'outputs/nope' is not there"):
        LarpPipeline.from_pretrained("outputs/nope")
    assert "--vqvae 'outputs/vqvae' is not there" in refusal("train_prior", capsys, "--vqvae", "outputs/vqvae")
    from larp_hf.cli import main

    with pytest.raises(SystemExit, match=r"`MODEL` './nope' is not there"):
        main(["generate", "./nope"])
    with pytest.raises(SystemExit, match=r"`--prior` './p' is not there"):
        main(["assemble", "--vqvae", str(tmp_path), "--prior", "./p", "--output", "o"])


def tensorboard_images(log_dir) -> dict[str, list[tuple[int, tuple[int, int]]]]:
    """The images of the TensorBoard event files under `log_dir`: tag -> [(step, (width, height))], read back."""
    import io

    import PIL.Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["images"]:
            for event in accumulator.Images(tag):
                size = PIL.Image.open(io.BytesIO(event.encoded_image_string)).size
                found.setdefault(tag, []).append((event.step, size))
    return found


def test_trackers_get_reconstruction_and_sample_grids_at_every_validation(tiny_config, prior_config_file, tmp_path):
    pytest.importorskip("tensorboard")
    from .test_train_prior import train_prior
    from .test_train_vqvae import train_vqvae

    train_vqvae("--config", tiny_config, "--output_dir", tmp_path / "vqvae", "--max_steps", 2, "--report_to", "tensorboard")
    # 8 originals over their 8 reconstructions, 16×16 each with 2-pixel gaps, at steps 1 and 2 (validated every step).
    assert tensorboard_images(tmp_path / "vqvae" / "logs") == {"val_reconstructions": [(1, (146, 38)), (2, (146, 38))]}

    train_prior("--config", prior_config_file, "--output_dir", tmp_path / "prior", "--max_steps", 2,
                "--max_train_samples", 24, "--num_grid_images", 4, "--report_to", "tensorboard")  # fmt: skip
    assert tensorboard_images(tmp_path / "prior" / "logs") == {"samples": [(1, (38, 38)), (2, (38, 38))]}
