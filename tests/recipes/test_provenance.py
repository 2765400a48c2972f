"""
What a model was trained on travels with it: train_vqvae.py records its dataset, encode_dataset.py and train_prior.py
default to that record and carry it on, `larp-hf assemble` keeps it in the pipeline, evaluate and sweep compare with
it. Run as users run them (forked from the preloaded server), on a user's layout: an imagefolder of RGB images with
string labels in metadata.jsonl, 3 classes, no test split.
"""

import argparse
import json

import datasets
import numpy as np
import PIL.Image
import pytest
import yaml

from larp_hf import LarpVQVAEConfig, prior_config, training
from larp_hf.cli import build_parser
from larp_hf.data import DatasetRecord, load_token_dataset, token_dataset_metadata
from larp_hf.evaluation.scores import choose_real_dataset

from .forked_runs import import_recipe, run_recipe


CLASSES = ["square", "circle", "triangle"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """30 RGB 16×16 images with string labels in metadata.jsonl (no class folders, no test split)."""
    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        array = np.full((16, 16, 3), 20, dtype=np.uint8)
        array[4:12, 2 + i % 3 * 4 : 6 + i % 3 * 4] = rng.integers(128, 256, 3)
        PIL.Image.fromarray(array).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "label": CLASSES[i % 3]})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return folder


def test_the_record_flows_from_the_tokenizer_to_the_pipeline(shapes, tmp_path):
    config = {
        "train_batch_size": 8, "eval_batch_size": 8, "lr_warmup_steps": 0, "max_steps": 1, "validation_steps": 1,
        "checkpointing_steps": 1, "num_grid_images": 4,
        "model": {"in_channels": 3, "image_size": 16, "hidden_channels": [8, 8], "stem_channels": 8,
                  "num_res_blocks": 1, "res_hidden_channels": 8, "codebook_size": 16, "codebook_dim": 4},
    }  # fmt: skip
    (tmp_path / "vqvae.yaml").write_text(yaml.safe_dump(config))
    vqvae, tokens, prior, pipeline = (tmp_path / name for name in ("vqvae", "tokens", "prior", "pipeline"))

    # A 30-image dataset without a test split: 6 images held out (a fifth), not the 1,000 asked for by default.
    result = run_recipe("train_vqvae", "--config", tmp_path / "vqvae.yaml", "--dataset", shapes, "--output_dir", vqvae)
    assert "holding out 6 of 30 training examples (--validation_size 1000 capped" in result.stdout
    record = DatasetRecord.from_folder(vqvae)
    assert record.source == str(shapes.resolve()) and record.class_names == sorted(CLASSES)
    assert (record.image_size, record.num_channels, record.split) == ([16, 16], 3, "train")

    # encode_dataset.py without --dataset encodes the tokenizer's images, not Fashion-MNIST, and says why.
    result = run_recipe("encode_dataset", "--vqvae", vqvae, "--output_dir", tokens, "--no_flip_augment")
    assert f"Dataset: {record.source} (from the tokenizer's record)" in result.stdout
    train_tokens = load_token_dataset(tokens)["train"]
    assert len(train_tokens) == 30 and train_tokens.features["label"].names == sorted(CLASSES)
    assert token_dataset_metadata(train_tokens)["dataset"]["class_names"] == sorted(CLASSES)

    # String labels train a class-conditional prior whose id2label names all three classes.
    prior_flags = ["--vqvae", vqvae, "--preset", "tiny", "--num_classes", 3, "--max_steps", 1, "--train_batch_size", 4,
                   "--validation_steps", 1, "--checkpointing_steps", 1, "--no-flip_augment"]  # fmt: skip
    run_recipe("train_prior", *prior_flags, "--token_dataset", tokens, "--output_dir", prior)
    # Without --num_classes the prior is unconditional, and a labelled dataset hears what the flag would do.
    unconditional = [flag for flag in prior_flags if flag not in ("--num_classes", 3)]
    result = run_recipe("train_prior", *unconditional, "--token_dataset", tokens, "--output_dir", tmp_path / "plain")
    assert "the tokens have 3 classes (circle, square, triangle); this prior is unconditional" in result.stdout
    prior_config_json = json.loads((prior / "config.json").read_text())
    assert prior_config_json["id2label"] == {"0": "circle", "1": "square", "2": "triangle"}
    assert prior_config_json["label2id"] == {"circle": 0, "square": 1, "triangle": 2}
    assert DatasetRecord.from_folder(prior).source == record.source

    # The pipeline keeps the record; evaluate and sweep compare with it by default.
    result = run_recipe("larp-hf", "assemble", "--vqvae", vqvae, "--prior", prior, "--output", pipeline,
                        "--no-sample-grid")  # fmt: skip
    assert "Training data: " + record.source in result.stdout
    from larp_hf import LarpPipeline

    loaded = LarpPipeline.from_pretrained(pipeline)
    choice = choose_real_dataset(loaded)
    assert (choice.source, choice.reason) == (record.source, "from the pipeline's record")


def test_train_prior_encodes_the_tokenizers_images_with_string_labels(shapes, tmp_path):
    """Without --token_dataset or --dataset, train_prior.py encodes the recorded images (string labels included)."""
    from .conftest import save_tiny_vqvae

    vqvae = tmp_path / "vqvae"
    save_tiny_vqvae(vqvae)  # a grey tokenizer: the RGB images are converted, as they would be
    DatasetRecord(source=str(shapes), split="train").save(vqvae)
    flags = ["--vqvae", vqvae, "--preset", "tiny", "--num_classes", 3, "--max_steps", 1, "--train_batch_size", 4,
             "--validation_steps", 1, "--checkpointing_steps", 1, "--output_dir", tmp_path / "prior"]  # fmt: skip
    result = run_recipe("train_prior", *flags)
    assert f"Dataset: {shapes} (from the tokenizer's record)" in result.stdout
    assert json.loads((tmp_path / "prior" / "config.json").read_text())["id2label"]["2"] == "triangle"


def test_nothing_recorded_means_fashion_mnist_said_out_loud(tmp_path):
    encode = import_recipe("encode_dataset")
    args = encode.parse_args(["--vqvae", str(tmp_path / "tokenizer"), "--output_dir", str(tmp_path / "tokens")])
    assert (args.dataset, args.dataset_reason) == ("fashion_mnist", "nothing recorded by the tokenizer: Fashion-MNIST")
    for command in ("evaluate", "sweep"):
        parsed = build_parser().parse_args([command, "model", "--output-dir", str(tmp_path), "--image-column", "img"])
        assert parsed.dataset is None and parsed.image_column == "img"  # the pipeline's record decides

    class Unrecorded:
        card_info = {"dataset": None, "metrics": {}, "evaluations": []}

    choice = choose_real_dataset(Unrecorded())
    assert (choice.source, choice.reason) == ("fashion_mnist", "nothing recorded by the pipeline: Fashion-MNIST")


def test_prior_id2label_has_one_entry_per_class():
    tokenizer = LarpVQVAEConfig(codebook_size=16)
    assert prior_config(tokenizer, preset="tiny", tokenizer_hash=None, num_classes=3).id2label == {0: "0", 1: "1", 2: "2"}
    named = prior_config(tokenizer, preset="tiny", tokenizer_hash=None, num_classes=3, class_names=["a", "b", "c"])
    assert named.id2label == {0: "a", 1: "b", 2: "c"} and named.label2id == {"a": 0, "b": 1, "c": 2}
    assert prior_config(tokenizer, preset="tiny", tokenizer_hash=None).id2label == {}  # unconditional: no classes
    with pytest.raises(ValueError, match="2 names for num_classes = 3"):
        prior_config(tokenizer, preset="tiny", tokenizer_hash=None, num_classes=3, class_names=["a", "b"])


def test_a_small_dataset_holds_out_a_fifth_for_validation():
    rows = datasets.Dataset.from_dict({"x": list(range(540))})
    flags = argparse.Namespace(train_split="train", validation_split="test", validation_size=1000, seed=0,
                               max_train_samples=None, max_validation_samples=None)  # fmt: skip
    train, validation = training.select_splits(rows, flags)
    assert (len(train), len(validation)) == (432, 108)
    with pytest.raises(ValueError, match="too few to hold any out"):
        training.select_splits(rows.select([0]), flags)


def test_the_classifier_takes_channels_and_padding_from_rgb_data(shapes, tmp_path):
    train_classifier = import_recipe("train_classifier")
    args = train_classifier.parse_args(["--dataset", str(shapes), "--image_size", "16", "--output_dir", str(tmp_path)])
    train, test, _, model_config, record = train_classifier.load_splits(args)
    assert model_config.in_channels == 3 and args.pad_to_size is True  # 16×16 RGB images in a 16×16 input
    assert model_config.num_classes == 3 and (len(train), len(test)) == (24, 6)  # no test split: a fifth held out
    assert record.class_names == sorted(CLASSES)
