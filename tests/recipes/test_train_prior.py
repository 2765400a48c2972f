"""
Token datasets and the prior recipe, run as users run them: `torchrun` in `test_launch_*`, and otherwise the scripts'
main in processes of their own forked from a preloaded server (tests/recipes/forked_runs.py), one or two at a time.
The tiny tokenizer, its token dataset and the prior's config are tests/recipes/conftest.py's `tokens` and
`prior_config_file`.
"""

import json
import subprocess

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

from larp_hf import LarpPipeline, LarpVQVAEModel, prior_metadata, token_dataset_metadata

from .conftest import save_tiny_vqvae  # noqa: F401 (re-exported to other tests)
from .forked_runs import run_recipe
from .test_train_vqvae import ROOT, import_recipe, launcher, run


ENCODE = ROOT / "recipes" / "encode_dataset.py"
TRAIN_PRIOR = ROOT / "recipes" / "train_prior.py"


def train_prior(*args, processes: int = 1, expect_success: bool = True) -> subprocess.CompletedProcess:
    """`python recipes/train_prior.py ARGS` (torchrun's world for processes=2), forked from the preloaded server."""
    return run_recipe("train_prior", *args, processes=processes, expect_success=expect_success)


def encode(*args, expect_success: bool = True) -> subprocess.CompletedProcess:
    return run_recipe("encode_dataset", *args, expect_success=expect_success)


def test_encode_recipe_writes_every_split_with_metadata(tokens):
    vqvae, token_dataset = tokens
    splits = datasets.load_from_disk(str(token_dataset))
    assert set(splits) == {"train", "test"} and (len(splits["train"]), len(splits["test"])) == (64, 16)
    assert set(splits["train"].column_names) == {"input_ids", "input_ids_flipped", "label"}
    metadata = token_dataset_metadata(splits["test"])
    assert metadata["tokenizer_hash"] == LarpVQVAEModel.from_pretrained(vqvae).tokenizer_hash()
    summary = json.loads((token_dataset / "larp_token_dataset.json").read_text())
    assert summary["splits"] == {"train": 64, "test": 16} and summary["grid_size"] == 4


def test_encode_recipe_rewrites_its_own_output_but_not_a_foreign_folder(tokens, tiny_image_dataset_dir, tmp_path):
    vqvae, token_dataset = tokens
    common = ["--vqvae", vqvae, "--dataset", tiny_image_dataset_dir, "--output_dir"]
    before = datasets.load_from_disk(str(token_dataset))["test"]["input_ids"]
    encode(*common, token_dataset)
    assert datasets.load_from_disk(str(token_dataset))["test"]["input_ids"] == before
    (tmp_path / "notes.txt").write_text("mine")
    result = encode(*common, tmp_path, expect_success=False)
    assert result.returncode != 0 and "holds no token dataset" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("processes", [1, 2])
def test_launch_trains_a_prior_that_stock_transformers_loads(processes, prior_config_file, tmp_path, tokens):
    output_dir = tmp_path / "prior"
    flags = ["--config", prior_config_file, "--output_dir", output_dir, "--max_steps", 2]
    if processes == 1:  # `accelerate launch` itself is the tokenizer recipe's test_launch_*
        result = train_prior(*flags)
    else:
        result = run([*launcher(processes), str(TRAIN_PRIOR), *map(str, flags)])
    assert f"{processes} process(es) on cpu" in result.stdout
    assert f"Parameters identical across {processes} process(es)." in result.stdout

    prior = AutoModelForCausalLM.from_pretrained(output_dir)
    assert isinstance(prior, GPT2LMHeadModel)
    larp = prior_metadata(prior.config)
    assert larp["tokenizer_hash"] == LarpVQVAEModel.from_pretrained(tokens[0]).tokenizer_hash()
    assert prior.config.n_positions == 1 + 16
    assert AutoModelForCausalLM.from_pretrained(output_dir / "best").num_parameters() == prior.num_parameters()
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["num_parameters"] == prior.num_parameters()
    assert metrics["val_loss"] > 0 and metrics["val_bits_per_token"] == pytest.approx(metrics["val_loss"] / 0.6931, rel=1e-3)
    assert 0 <= metrics["val_top1_accuracy"] <= metrics["val_top5_accuracy"] <= metrics["val_top10_accuracy"] <= 1
    assert metrics["train_seconds"] > 0 and [entry["step"] for entry in metrics["history"]] == [1, 2]

    # It pairs with its tokenizer in a pipeline, and stock generate samples one whole grid from generation_config.json.
    assert prior.generation_config.do_sample is True and prior.generation_config.max_new_tokens == 16
    bos = torch.full((2, 1), larp["bos_token_id"])
    assert prior.generate(bos, attention_mask=torch.ones_like(bos)).shape == (2, 17)
    pipeline = LarpPipeline(LarpVQVAEModel.from_pretrained(tokens[0]), prior)
    assert pipeline(num_images=2, seed=0).codes.shape == (2, 4, 4)


# That a resumed run matches an uninterrupted one is test_mixed_precision.py's
# test_resume_matches_an_uninterrupted_run_in_either_precision, with this config and both precisions.


def test_mismatched_tokenizer_and_unknown_preset_are_refused(prior_config_file, tmp_path, tokens, capsys):
    other_vqvae = save_tiny_vqvae(tmp_path / "other-vqvae", seed=1)
    result = train_prior("--config", prior_config_file, "--vqvae", other_vqvae, "--output_dir", tmp_path / "a", expect_success=False)
    assert result.returncode != 0 and f"--token_dataset {tokens[1]} (train split) was made by tokenizer" in result.stderr
    assert "Re-encode the images with this tokenizer" in result.stderr

    with pytest.raises(SystemExit) as exit_info:  # argparse's error, in this process
        import_recipe("train_prior").parse_args(["--config", str(prior_config_file), "--preset", "gigantic", "--output_dir", str(tmp_path / "b")])
    assert exit_info.value.code != 0 and "unknown --preset 'gigantic'" in capsys.readouterr().err


def test_a_token_dataset_written_to_parquet_trains_as_the_saved_one(prior_config_file, tmp_path, tokens):
    splits = datasets.load_from_disk(str(tokens[1]))
    for name, split in splits.items():
        split.to_parquet(tmp_path / "parquet" / f"{name}.parquet")
    common = ["--config", prior_config_file, "--max_steps", 2, "--num_classes", 2]
    result = train_prior(*common, "--token_dataset", tmp_path / "parquet", "--output_dir", tmp_path / "from-parquet")
    assert "64 train / 16 val sequences" in result.stdout
    train_prior(*common, "--output_dir", tmp_path / "from-disk")
    expected, trained = (load_file(tmp_path / name / "model.safetensors") for name in ("from-disk", "from-parquet"))
    for name in expected:
        torch.testing.assert_close(trained[name], expected[name], msg=name)


@pytest.mark.parametrize(
    "broken, message",
    [
        ({"input_ids": [3] * 15}, "`input_ids` sequences are 15 codes long, but a 4×4 grid has 16"),
        ({"input_ids_flipped": [3] * 64}, "`input_ids_flipped` sequences are 64 codes long, but a 4×4 grid has 16"),
        ({"input_ids": [20] * 16}, r"`input_ids` holds code 20, outside the codebook's [0, 16)"),
        ({"label": -1}, "holds label -1, outside [0, 2) for a prior with 2 classes"),
    ],
    ids=["15-codes", "64-codes", "code-20", "label-minus-1"],
)
def test_malformed_token_datasets_are_refused(broken, message, prior_config_file, tmp_path, tokens):
    splits = datasets.load_from_disk(str(tokens[1]))
    features = splits["train"].features.copy()
    for column, value in broken.items():  # the metadata still claims the right tokenizer
        if column == "label":
            features[column] = datasets.Value("int64")
        else:
            features[column] = datasets.List(features[column].feature, length=len(value))
    malformed = splits.map(lambda row: broken, features=features)
    malformed.save_to_disk(str(tmp_path / "malformed"))
    result = train_prior(
        "--config", prior_config_file, "--token_dataset", tmp_path / "malformed", "--num_classes", 2,
        "--output_dir", tmp_path / "out", expect_success=False,
    )  # fmt: skip
    assert result.returncode != 0 and f"--token_dataset {tmp_path / 'malformed'} (train split)" in result.stderr
    assert message in result.stderr, result.stderr[-1500:]


@pytest.mark.parametrize("config_path", sorted((ROOT / "recipes" / "configs").glob("prior_*.yaml")), ids=lambda p: p.stem)
def test_shipped_prior_configs_parse(config_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs' relative output_dir must not meet a run of the user's
    train_prior = import_recipe("train_prior")
    args = train_prior.parse_args(["--config", str(config_path)])
    assert args.preset in ("small", "medium", "base", "large")
    assert args.output_dir.startswith("outputs/") and args.vqvae.startswith("outputs/vqvae-")


def test_class_conditional_prior_encoding_on_the_fly(tokens, tiny_image_dataset_dir, tmp_path):
    vqvae, token_dataset = tokens
    common = ["--vqvae", vqvae, "--preset", "tiny", "--num_classes", 2, "--attention_dropout", 0.2]
    common += ["--train_batch_size", 8, "--eval_batch_size", 16, "--lr_warmup_steps", 0, "--max_steps", 2]
    on_the_fly, pre_encoded = tmp_path / "on-the-fly", tmp_path / "pre-encoded"
    # The images are decoded in 2 DataLoader workers; the tokenizer encodes them in the training process.
    on_the_fly_flags = ["--encode_on_the_fly", "--dataset", tiny_image_dataset_dir, "--dataloader_num_workers", 2]
    result = train_prior(*common, *on_the_fly_flags, "--output_dir", on_the_fly)
    assert "64 train / 16 val sequences" in result.stdout
    train_prior(*common, "--token_dataset", token_dataset, "--output_dir", pre_encoded)

    prior = AutoModelForCausalLM.from_pretrained(on_the_fly)
    larp = prior_metadata(prior.config)
    assert prior.config.vocab_size == 16 + 1 + 2 + 1 and prior.config.n_positions == 2 + 16
    assert (larp["class_token_offset"], larp["null_class_token_id"]) == (17, 19)
    pipeline = LarpPipeline(LarpVQVAEModel.from_pretrained(vqvae), prior)
    assert pipeline(num_images=2, class_labels=[0, 1], guidance_scale=2.0, seed=0).codes.shape == (2, 4, 4)
    # The same codes either way: encoding per batch trains exactly what the pre-encoded copy trains.
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (on_the_fly, pre_encoded)]
    assert metrics[0]["val_loss"] == pytest.approx(metrics[1]["val_loss"], rel=1e-6)

    result = train_prior(*common, "--num_classes", 3, "--token_dataset", token_dataset, "--output_dir", tmp_path / "x", expect_success=False)
    assert result.returncode != 0 and "needs a `label` ClassLabel column with that many classes" in result.stderr


def test_two_processes_without_a_token_dataset_encode_the_images_themselves(tokens, tiny_image_dataset_dir, tmp_path):
    vqvae, token_dataset = tokens
    common = ["--vqvae", vqvae, "--preset", "tiny", "--train_batch_size", 8, "--eval_batch_size", 16]
    common += ["--lr_warmup_steps", 0, "--max_steps", 2, "--validation_steps", 2]
    train_prior(*common, "--dataset", tiny_image_dataset_dir, "--output_dir", tmp_path / "encoded", processes=2)
    train_prior(*common, "--token_dataset", token_dataset, "--output_dir", tmp_path / "read", processes=2)
    # The codes both processes made together are those encode_dataset.py made: the two runs train alike.
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("encoded", "read")]
    assert metrics[0]["val_loss"] == pytest.approx(metrics[1]["val_loss"], rel=1e-6)


def test_a_llama_prior_trains_resumes_and_loads_with_stock_transformers(prior_config_file, tmp_path, capsys):
    from transformers import LlamaForCausalLM

    common = ["--config", prior_config_file, "--architecture", "llama", "--model.num_hidden_layers", 1,
              "--lr_scheduler", "constant", "--max_train_samples", 24]  # fmt: skip
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_prior(*common, "--output_dir", straight, "--max_steps", 3)
    train_prior(*common, "--output_dir", interrupted, "--max_steps", 2)
    train_prior(*common, "--output_dir", interrupted, "--max_steps", 3, "--resume_from_checkpoint", "latest")
    prior = AutoModelForCausalLM.from_pretrained(straight)
    assert isinstance(prior, LlamaForCausalLM) and prior.config.num_hidden_layers == 1
    assert prior_metadata(prior.config)["architecture"] == "llama"
    assert json.loads((straight / "metrics.json").read_text())["architecture"] == "llama"
    expected, resumed = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], msg=name)
    with pytest.raises(SystemExit) as exit_info:  # argparse's error, in this process
        import_recipe("train_prior").parse_args([*map(str, common), "--output_dir", str(tmp_path / "x"), "--model.n_layer", "2"])
    assert exit_info.value.code != 0 and "unknown LlamaConfig fields ['n_layer']" in capsys.readouterr().err
