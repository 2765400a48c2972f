"""The `larp-hf` console script: installed and run as a user runs it once, then `cli.main` in-process (same code)."""

import json
import shutil
import subprocess
import sys

import datasets
import numpy as np
import PIL.Image
import pytest
from huggingface_hub import ModelCard

from larp_hf import LarpPipeline, cli
from larp_hf.pipelines import samples

from .conftest import make_tiny_pipeline


def larp_hf(*args, expect_success=True, capsys=None):
    """Runs `larp-hf ARGS` in this process (what the console script calls) and returns (exit code, stdout, stderr)."""
    try:
        cli.main([str(arg) for arg in args])
        code = 0
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else 1
        if not isinstance(error.code, int) and error.code is not None:
            print(error.code, file=sys.stderr)  # what Python prints for SystemExit("message")
    out, err = capsys.readouterr()
    assert (code == 0) == expect_success, (code, out[-2000:], err[-2000:])
    return out, err


def run_console_script(*args) -> subprocess.CompletedProcess:
    executable = shutil.which("larp-hf")
    assert executable, "the larp-hf console script is not installed (pip install -e .)"
    result = subprocess.run([executable, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "pipe"
    make_tiny_pipeline().save_pretrained(folder, sample_grid=False)
    return folder


def test_console_script_is_installed_and_every_command_has_help(capsys):
    top = run_console_script("--help")
    for command in ("assemble", "generate", "info"):
        assert command in top.stdout
        out, _ = larp_hf(command, "--help", capsys=capsys)
        assert f"usage: larp-hf {command}" in out


def test_generate_writes_a_grid_of_the_expected_size_pngs_and_a_dataset(pipeline_dir, tmp_path, capsys):
    result = run_console_script(
        "generate", pipeline_dir, "--num-images", 6, "--nrow", 3, "--seed", 1, "--temperature", 0.9, "--top-k", 10,
        "--output", tmp_path / "grid.png", "--image-dir", tmp_path / "images", "--output-dataset", tmp_path / "dataset",
    )
    assert "images/s" in result.stdout
    # 3 columns and 2 rows of 16×16 images with 2-pixel gaps around each.
    assert PIL.Image.open(tmp_path / "grid.png").size == (3 * 18 + 2, 2 * 18 + 2)
    pngs = sorted((tmp_path / "images").glob("*.png"))
    assert len(pngs) == 6 and PIL.Image.open(pngs[0]).size == (16, 16)
    dataset = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert len(dataset) == 6 and len(dataset[0]["codes"]) == 64 and dataset[0]["image"].size == (16, 16)

    # The same seed gives the same images.
    larp_hf("generate", pipeline_dir, "--num-images", 6, "--seed", 1, "--temperature", 0.9, "--top-k", 10,
            "--image-dir", tmp_path / "again", capsys=capsys)
    for first, second in zip(pngs, sorted((tmp_path / "again").glob("*.png"))):
        assert PIL.Image.open(first).tobytes() == PIL.Image.open(second).tobytes()


def test_generate_reports_bad_input_clearly(pipeline_dir, tmp_path, capsys):
    def error_of(*args):
        return larp_hf("generate", *args, expect_success=False, capsys=capsys)[1]

    assert "`--top-k` must be an integer" in error_of(pipeline_dir, "--top-k", 1000, "--output", tmp_path / "g.png")
    assert "unconditional" in error_of(pipeline_dir, "--class-label", 0, "--output", tmp_path / "g.png")
    assert "not a LarpPipeline" in error_of(tmp_path, "--output", tmp_path / "g.png")
    assert "must end in .png" in error_of(pipeline_dir, "--output", tmp_path / "g.jpg")
    assert "unconditional" in error_of(pipeline_dir, "--class-label", "circle")  # a name too: this prior has no classes
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert "--overwrite" in error_of(pipeline_dir, "--image-dir", tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert not (tmp_path / "g.png").exists()


def test_info_describes_the_parts(pipeline_dir, capsys):
    text, _ = larp_hf("info", pipeline_dir, capsys=capsys)
    assert "codebook_size   32" in text and "grid_size       8" in text and "temperature=1.0" in text
    described = json.loads(larp_hf("info", pipeline_dir, "--json", capsys=capsys)[0])
    assert described["vqvae"]["codebook_size"] == 32 and described["prior"]["num_classes"] == 0
    assert described["sampling_defaults"] == {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "guidance_scale": 1.0}


def test_assemble_builds_a_pipeline_from_recipe_outputs(tmp_path, capsys):
    pipeline = make_tiny_pipeline()
    pipeline.vqvae.save_pretrained(tmp_path / "vqvae")
    pipeline.image_processor.save_pretrained(tmp_path / "vqvae")
    (tmp_path / "vqvae" / "metrics.json").write_text(json.dumps({"val_psnr": 25.5, "dataset": "fashion_mnist"}))
    pipeline.prior.save_pretrained(tmp_path / "prior")
    (tmp_path / "prior" / "metrics.json").write_text(json.dumps({"val_loss": 2.5, "val_top5_accuracy": 0.6}))

    larp_hf("assemble", "--vqvae", tmp_path / "vqvae", "--prior", tmp_path / "prior", "--output", tmp_path / "pipe",
            "--temperature", 0.8, "--top-k", 5, capsys=capsys)
    described = json.loads(larp_hf("info", tmp_path / "pipe", "--json", capsys=capsys)[0])
    assert described["sampling_defaults"] == {"temperature": 0.8, "top_k": 5, "top_p": 1.0, "guidance_scale": 1.0}
    assert described["dataset"] == "fashion_mnist"
    card = ModelCard.load(tmp_path / "pipe" / "README.md")
    assert "| tokenizer reconstruction PSNR (dB, validation split) | 25.5 |" in card.text
    assert "| prior validation top-5 accuracy | 0.6 |" in card.text
    assert PIL.Image.open(tmp_path / "pipe" / "samples.png").size == (146, 146)

    # A prior from another tokenizer is refused, naming both sides.
    make_tiny_pipeline(seed=1).prior.save_pretrained(tmp_path / "other-prior")
    _, err = larp_hf("assemble", "--vqvae", tmp_path / "vqvae", "--prior", tmp_path / "other-prior", "--output",
                     tmp_path / "bad", expect_success=False, capsys=capsys)
    assert "trained on codes of tokenizer" in err and not (tmp_path / "bad").exists()
    # A folder holding something else is not written into.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    _, err = larp_hf("assemble", "--vqvae", tmp_path / "vqvae", "--prior", tmp_path / "prior", "--output",
                     tmp_path / "notes", expect_success=False, capsys=capsys)
    assert "holds no pipeline (a.txt)" in err and sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["a.txt"]
    # An existing pipeline is not replaced by accident; with --overwrite it is, old sample grid and all.
    before = (tmp_path / "pipe" / "larp_pipeline.json").read_text()
    _, err = larp_hf("assemble", "--vqvae", tmp_path / "vqvae", "--prior", tmp_path / "prior", "--output",
                     tmp_path / "pipe", "--no-sample-grid", expect_success=False, capsys=capsys)
    assert "holds a pipeline" in err and "--overwrite" in err
    assert (tmp_path / "pipe" / "larp_pipeline.json").read_text() == before and (tmp_path / "pipe" / "samples.png").exists()
    larp_hf("assemble", "--vqvae", tmp_path / "vqvae", "--prior", tmp_path / "prior", "--output", tmp_path / "pipe",
            "--no-sample-grid", "--overwrite", capsys=capsys)
    assert not (tmp_path / "pipe" / "samples.png").exists()
    assert "samples.png" not in ModelCard.load(tmp_path / "pipe" / "README.md").text


def test_generate_loads_the_pipeline_in_the_dtype_asked_for(pipeline_dir, tmp_path, capsys):
    larp_hf("generate", pipeline_dir, "--dtype", "bfloat16", "--num-images", 4, "--output-dataset", tmp_path / "ds",
            capsys=capsys)  # fmt: skip
    dataset = datasets.load_from_disk(str(tmp_path / "ds"))
    assert len(dataset) == 4 and all(0 <= code < 32 for row in dataset["codes"] for code in row)
    assert "invalid choice" in larp_hf("generate", pipeline_dir, "--dtype", "int8", expect_success=False, capsys=capsys)[1]


def test_a_flag_means_one_thing_in_every_command(capsys):
    """--dataset-dir is the Fashion-MNIST IDX input folder (as the recipes' --dataset_dir); generate writes --output-dataset."""
    for command in ("evaluate", "sweep"):
        out, _ = larp_hf(command, "--help", capsys=capsys)
        assert "--dataset-dir DATASET_DIR" in out and "IDX files (input)" in out.replace("\n", " ").replace("  ", " ")
    out, _ = larp_hf("generate", "--help", capsys=capsys)
    assert "--output-dataset" in out and "--dataset-dir" not in out


def test_generate_writes_large_requests_in_parts_that_match_one_call(pipeline_dir, tmp_path, monkeypatch):
    from larp_hf import LarpPipeline

    # 10 images in parts of 4, 4 and 2; the first part's first batch is sampled alone, for the time estimate
    monkeypatch.setattr(samples, "PART_IMAGES", 4)
    calls = []
    original = LarpPipeline.__call__
    monkeypatch.setattr(LarpPipeline, "__call__", lambda self, **kw: calls.append(kw["num_images"]) or original(self, **kw))
    cli.main([
        "generate", str(pipeline_dir), "--num-images", "10", "--batch-size", "3", "--seed", "2",
        "--output-dataset", str(tmp_path / "ds"), "--image-dir", str(tmp_path / "pngs"), "--output", str(tmp_path / "g.png"),
    ])  # fmt: skip
    assert calls == [3, 1, 4, 2]
    written = datasets.load_from_disk(str(tmp_path / "ds"))
    expected = LarpPipeline.from_pretrained(pipeline_dir)(num_images=10, seed=2).codes.flatten(1).tolist()
    assert written["codes"] == expected
    assert sorted(p.name for p in (tmp_path / "pngs").glob("*.png")) == [f"{i:05d}.png" for i in range(10)]
    assert not list(tmp_path.glob(".larp-generate-*"))  # the parts are gone
    with pytest.raises(SystemExit, match="at most 4096 images"):
        cli.main(["generate", str(pipeline_dir), "--num-images", "5000", "--output", str(tmp_path / "big.png")])


def test_a_class_conditional_pipeline_generates_the_classes_in_turn_one_grid_row_each(tmp_path, capsys):
    folder = tmp_path / "conditional"
    make_tiny_pipeline(num_classes=3).save_pretrained(folder, sample_grid=False)
    larp_hf("generate", folder, "--num-images", 6, "--seed", 2, "--output", tmp_path / "grid.png",
            "--output-dataset", tmp_path / "dataset", "--image-dir", tmp_path / "pngs", capsys=capsys)  # fmt: skip
    dataset = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert dataset["label"] == [0, 1, 2, 0, 1, 2]
    # Grid: 2 columns (6 images / 3 classes), row r holds class r's images, 16 px with 2 px gaps.
    grid = np.asarray(PIL.Image.open(tmp_path / "grid.png").convert("L"))
    assert grid.shape == (3 * 18 + 2, 2 * 18 + 2)
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    for row, label in enumerate([0, 1, 2]):
        for column, index in enumerate(i for i in range(6) if dataset["label"][i] == label):
            cell = grid[2 + row * 18 : 18 + row * 18, 2 + column * 18 : 18 + column * 18]
            assert np.array_equal(cell, np.asarray(PIL.Image.open(pngs[index]).convert("L")))


def test_assemble_stores_a_guidance_scale_for_a_class_conditional_prior(tmp_path, capsys):
    pipeline = make_tiny_pipeline(num_classes=2)
    pipeline.vqvae.save_pretrained(tmp_path / "vqvae")
    pipeline.prior.save_pretrained(tmp_path / "prior")
    larp_hf("assemble", "--vqvae", tmp_path / "vqvae", "--prior", tmp_path / "prior", "--output", tmp_path / "pipe",
            "--guidance-scale", 2.5, "--no-sample-grid", capsys=capsys)  # fmt: skip
    described = json.loads(larp_hf("info", tmp_path / "pipe", "--json", capsys=capsys)[0])
    assert described["sampling_defaults"]["guidance_scale"] == 2.5
    make_tiny_pipeline().prior.save_pretrained(tmp_path / "unconditional")
    _, err = larp_hf("assemble", "--vqvae", tmp_path / "vqvae", "--prior", tmp_path / "unconditional", "--output",
                     tmp_path / "other", "--guidance-scale", 2.5, expect_success=False, capsys=capsys)  # fmt: skip
    assert "--guidance-scale" in err and "unconditional" in err


def test_no_command_runs_code_planted_in_a_folder(pipeline_dir, tmp_path, monkeypatch, capsys):
    """
    A prior whose config names a module of its own folder (transformers' `auto_map`) never has it imported, and no
    command asks whether to (an `input()` that would answer yes is never called): with a model type transformers
    knows, the stock class loads; with one only the planted code defines, the command fails and says why.
    """
    planted = tmp_path / "planted"
    shutil.copytree(pipeline_dir, planted)
    marker = tmp_path / "code-ran"
    payload = f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import GPT2Config as PlantedConfig\n"
    payload += "from transformers import GPT2LMHeadModel as PlantedModel\n"
    for folder in (planted / "prior", planted):
        (folder / "planted.py").write_text(payload)
    config = json.loads((planted / "prior" / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "planted.PlantedConfig", "AutoModelForCausalLM": "planted.PlantedModel"}
    (planted / "prior" / "config.json").write_text(json.dumps(config))
    asked = []
    monkeypatch.setattr("builtins.input", lambda *args: asked.append(args) or "y")

    # The folder's manifest refuses the edit first; past it (--no-verify), the code is still never run.
    _, err = larp_hf("info", planted, expect_success=False, capsys=capsys)
    assert "prior/config.json: damaged" in err and "prior/planted.py: not in the manifest" in err
    larp_hf("info", planted, "--no-verify", capsys=capsys)
    larp_hf("generate", planted, "--no-verify", "--num-images", 2, "--output", tmp_path / "grid.png", capsys=capsys)
    larp_hf("assemble", "--vqvae", planted / "vqvae", "--prior", planted / "prior", "--output", tmp_path / "again",
            capsys=capsys)  # fmt: skip
    LarpPipeline.from_pretrained(planted, verify=False)

    (planted / "prior" / "config.json").write_text(json.dumps({**config, "model_type": "planted"}))
    for command in (["info", planted, "--no-verify"],
                    ["generate", planted, "--no-verify", "--output", tmp_path / "grid2.png"],
                    ["assemble", "--vqvae", planted / "vqvae", "--prior", planted / "prior", "--output", tmp_path / "x"]):
        _, err = larp_hf(*command, expect_success=False, capsys=capsys)
        assert "never runs code from a model folder" in err and "model type 'planted'" in err, err
    assert not marker.exists() and not asked
