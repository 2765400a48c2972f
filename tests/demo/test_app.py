"""The demo page in-process: the missing-extra message, class names, the controls and what one Generate returns."""

import sys

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from larp_hf import LarpPipeline, set_sampling_defaults
from larp_hf.data.loading import FASHION_MNIST_LABELS
from larp_hf.demo import build_demo, class_names, export_space, import_gradio, sample
from larp_hf.demo.app import ALL_CLASSES, NULL_CLASS
from larp_hf.demo.commands import main as demo_main
from larp_hf.pipelines import image_grid

from ..conftest import make_tiny_pipeline


def test_without_gradio_every_entry_point_names_the_demo_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    extra = 'pip install "larp_hf[demo]"'
    with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        import_gradio()
    with pytest.raises(ImportError, match="larp_hf demo needs Gradio"):
        build_demo(make_tiny_pipeline())
    with pytest.raises(ImportError, match="larp_hf demo needs Gradio"):
        export_space("org/name", tmp_path / "space")
    # The commands say it before loading anything: this pipeline folder does not even exist.
    for argv in (["demo", str(tmp_path / "missing")], ["export-space", "org/name", str(tmp_path / "space")]):
        with pytest.raises(SystemExit) as error:
            demo_main(argv)
        assert str(error.value) == f"error: The larp_hf demo needs Gradio, an optional dependency: {extra}"


def test_class_names_are_the_priors_id2label_else_indices():
    named = make_tiny_pipeline(num_classes=10, id2label=dict(enumerate(FASHION_MNIST_LABELS)))
    assert class_names(named) == FASHION_MNIST_LABELS
    # No names in the prior (transformers' default id2label): indices, whatever dataset the card names.
    unnamed = make_tiny_pipeline(num_classes=3)
    unnamed.card_info["dataset"] = "fashion_mnist"
    assert class_names(unnamed) == ["class 0", "class 1", "class 2"]
    assert class_names(make_tiny_pipeline()) == []


def test_the_gallery_captions_name_each_images_class():
    pipeline = make_tiny_pipeline(num_classes=3, id2label={0: "circle", 1: "square", 2: "triangle"})
    in_turn = sample(pipeline, 4, 0, 1.0, 0, 1.0, class_label=ALL_CLASSES, guidance_scale=1.0)
    assert in_turn["captions"] == ["circle", "square", "triangle", "circle"]
    assert sample(pipeline, 2, 0, 1.0, 0, 1.0, class_label=2.0, guidance_scale=1.0)["captions"] == ["triangle"] * 2
    assert sample(pipeline, 1, 0, 1.0, 0, 1.0, class_label=NULL_CLASS, guidance_scale=1.0)["captions"] == [
        "unconditional"
    ]
    assert sample(make_tiny_pipeline(num_classes=2), 2, 0, 1.0, 0, 1.0, class_label=1)["captions"] == ["class 1"] * 2
    assert sample(make_tiny_pipeline(), 1, 0, 1.0, 0, 1.0)["captions"] is None


def test_one_generate_is_the_pipeline_call_with_the_same_seed():
    pipeline = make_tiny_pipeline(num_classes=3)
    # The page sends whole numbers as floats; they reach the pipeline as ints.
    result = sample(pipeline, 6.0, 11.0, 0.9, 8.0, 0.95, class_label=2.0, guidance_scale=1.5)
    expected = pipeline(num_images=6, seed=11, temperature=0.9, top_k=8, top_p=0.95, class_labels=2, guidance_scale=1.5)
    for image, expected_image in zip(result["images"], expected.images, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(expected_image))
    assert np.array_equal(result["codes"], expected.codes.numpy()) and result["codes"].shape == (6, 8, 8)
    pixels = torch.stack([torch.from_numpy(np.array(image)) for image in expected.images])[:, None] / 255
    assert np.array_equal(np.asarray(result["grid"]), np.asarray(image_grid(pixels)))
    assert result["seconds"] > 0
    # class_label -1 is the selector's "every class in turn" (the pipeline's default), -2 the unconditional model.
    in_turn = sample(pipeline, 4, 0, 1.0, 0, 1.0, class_label=ALL_CLASSES, guidance_scale=1.0)
    assert np.array_equal(in_turn["codes"], pipeline(num_images=4, class_labels=[0, 1, 2, 0], seed=0).codes.numpy())
    unconditional = sample(pipeline, 2, 0, 1.0, 0, 1.0, class_label=NULL_CLASS, guidance_scale=1.0)
    assert np.array_equal(unconditional["codes"], pipeline(num_images=2, class_labels="null", seed=0).codes.numpy())
    with pytest.raises(ValueError, match="is the null class"):
        sample(pipeline, 2, 0, 1.0, 0, 1.0, class_label=NULL_CLASS, guidance_scale=2.0)
    with pytest.raises(ValueError, match="`top_p` must be a number in"):
        sample(pipeline, 2, 0, 1.0, 0, 0.0)


def _components(demo) -> dict:
    return {getattr(block, "label", None): block for block in demo.blocks.values() if getattr(block, "label", None)}


def test_the_controls_start_at_the_pipelines_sampling_defaults_and_classes_show_only_when_there_are_some():
    pytest.importorskip("gradio", reason='the demo tests need Gradio: pip install -e ".[test]"')
    pipeline = make_tiny_pipeline(num_classes=10, id2label=dict(enumerate(FASHION_MNIST_LABELS)))
    pipeline.card_info["dataset"] = "fashion_mnist"
    set_sampling_defaults(pipeline.prior, temperature=0.8, top_k=5, top_p=0.9, guidance_scale=2.5)
    demo = build_demo(pipeline, model_id="org/tiny")
    controls = _components(demo)
    assert controls["Temperature"].value == 0.8
    assert controls["Top-k (0 = off)"].value == 5 and controls["Top-k (0 = off)"].maximum == pipeline.codebook_size
    assert controls["Top-p (1.0 = off)"].value == 0.9
    guidance = controls["Guidance scale (1 = none; needs a class)"]
    assert controls["Class"].visible and guidance.visible and guidance.value == 2.5  # the prior's stored scale
    assert controls["Class"].value == ALL_CLASSES  # the pipeline's default: every class in turn
    assert [value for _, value in controls["Class"].choices][:2] == [ALL_CLASSES, NULL_CLASS]
    assert [label for label, _ in controls["Class"].choices][2:] == FASHION_MNIST_LABELS
    heading = next(block.value for block in demo.blocks.values() if type(block).__name__ == "Markdown")
    assert heading.startswith(
        "# LARP: org/tiny\n[org/tiny](https://huggingface.co/org/tiny) · trained on fashion_mnist"
    )

    unconditional = _components(build_demo(make_tiny_pipeline()))
    assert not unconditional["Class"].visible and not unconditional["Guidance scale (1 = none; needs a class)"].visible
    assert unconditional["Temperature"].value == 1.0 and unconditional["Top-k (0 = off)"].value == 0


def test_the_cli_wires_the_demo_commands(capsys):
    from larp_hf import cli

    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    assert {"demo", "export-space"} <= set(commands), "larp_hf/cli.py must register larp_hf.demo's commands"
    for command in ("demo", "export-space"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert f"usage: larp-hf {command}" in capsys.readouterr().out


def _heading(demo) -> str:
    return next(block.value for block in demo.blocks.values() if type(block).__name__ == "Markdown")


def test_the_heading_and_a_generate_of_any_tokenizer_square_or_not():
    pytest.importorskip("gradio", reason='the demo tests need Gradio: pip install -e ".[test]"')
    from larp_hf import LarpImageProcessor, prior_config
    from larp_hf.tokenizers import wrap_tokenizer

    from ..tokenizers.test_evaluation_any_tokenizer import non_square_pipeline

    # A diffusers VQModel read at 8×12 pixels: a 4×6 grid of 300 codes, described as grid/image_shape [h, w].
    pipeline = non_square_pipeline(num_classes=2)
    assert "grid_size" not in pipeline.describe()["vqvae"] and "image_size" not in pipeline.describe()["vqvae"]
    heading = _heading(build_demo(pipeline, model_id="org/vq"))
    assert "· 8×12 images from 4×6 grids of 300 codes · GPT-2 prior of" in heading
    result = sample(pipeline, 5, 3, 1.0, 0, 1.0, class_label=1, guidance_scale=2.0)
    expected = pipeline(num_images=5, seed=3, class_labels=1, guidance_scale=2.0)
    assert result["codes"].shape == (5, 4, 6) and np.array_equal(result["codes"], expected.codes.numpy())
    assert all(image.size == (12, 8) for image in result["images"])  # PIL sizes are (width, height)
    pixels = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in expected.images]) / 255
    assert np.array_equal(np.asarray(result["grid"]), np.asarray(image_grid(pixels)))

    # A pipeline described with the int keys alone (folders written before grids were [h, w]): as before.
    old = make_tiny_pipeline()
    described = old.describe()
    for key in ("grid", "image_shape"):
        del described["vqvae"][key]
    old.describe = lambda: described
    assert "\n16×16 images from 8×8 grids of 32 codes ·" in _heading(build_demo(old))

    # 32×32 grids of 32,768 codes: the top-k slider reaches the whole codebook.
    table = torch.nn.Embedding(2**15, 3)
    tokenizer = wrap_tokenizer(
        table, encode=lambda x: torch.zeros(x.shape[0], 32, 32, dtype=torch.long),
        decode=lambda codes: table(codes).permute(0, 3, 1, 2), codebook_size=2**15, grid=(32, 32),
        image_size=(64, 64), num_channels=3, value_range=(-1.0, 1.0),
    )  # fmt: skip
    large = LarpPipeline(
        tokenizer, GPT2LMHeadModel(prior_config(tokenizer, preset="tiny")), LarpImageProcessor.from_tokenizer(tokenizer)
    )
    demo = build_demo(large)
    assert "\n64×64 images from 32×32 grids of 32,768 codes ·" in _heading(demo)
    assert _components(demo)["Top-k (0 = off)"].maximum == 2**15
