"""The data side with a tokenizer that is not ours: a diffusers VQModel with a non-square grid and more than 256 codes
goes through encode_dataset -> token dataset -> prior_config -> one training step -> check_pair, and through
recipes/encode_dataset.py and recipes/train_prior.py; larger grids (16×16, 32×32) get the positions they need."""

import json

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2LMHeadModel


diffusers = pytest.importorskip("diffusers")

from larp_hf import LarpImageProcessor, LarpPriorCollator, check_pair, prior_config, set_sampling_defaults  # noqa: E402
from larp_hf.data import check_token_dataset, encode_dataset, load_image_dataset, token_dataset_metadata  # noqa: E402
from larp_hf.data.token_dataset import code_feature, make_metadata  # noqa: E402
from larp_hf.prior import layout_grid, prior_metadata  # noqa: E402
from larp_hf.tokenizers import load_tokenizer, wrap_tokenizer  # noqa: E402
from larp_hf.tokenizers.adapter_diffusers import DiffusersVQTokenizer  # noqa: E402

from ..recipes.forked_runs import run_recipe  # noqa: E402
from .test_adapter_diffusers import tiny_vq_model  # noqa: E402


CODEBOOK_SIZE = 300  # > 256: the codes need uint16


def large_codebook_vq_model(seed: int = 0) -> "diffusers.VQModel":
    """`tiny_vq_model` with CODEBOOK_SIZE codes, put on the latents of random images (as there) so that many are used."""
    model = tiny_vq_model(seed)
    torch.manual_seed(seed)
    model = diffusers.VQModel.from_config({**model.config, "num_vq_embeddings": CODEBOOK_SIZE}).eval()
    with torch.no_grad():
        latents = model.encode(torch.rand(8, 3, 16, 16) * 2 - 1).latents  # (8, D, 8, 8): 512 vectors
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        model.quantize.embedding.weight.copy_(vectors[torch.randperm(vectors.shape[0])[:CODEBOOK_SIZE]])
    return model


@pytest.fixture(scope="module")
def train_split(tiny_image_dataset_dir):
    return load_image_dataset(tiny_image_dataset_dir, split="train")


@pytest.fixture(scope="module")
def non_square_folder(tmp_path_factory):
    """A VQModel (downsample 2) read at 8×12 pixels: a 4×6 grid of 300 codes, saved with its larp_tokenizer.json."""
    folder = tmp_path_factory.mktemp("vq_4x6") / "tokenizer"
    tokenizer = DiffusersVQTokenizer(large_codebook_vq_model(), value_range=(-1.0, 1.0), image_size=(8, 12))
    tokenizer.save_pretrained(folder)
    return folder


def test_non_square_grid_and_large_codebook_from_images_to_a_trained_step_and_a_checked_pair(
    non_square_folder, train_split
):
    tokenizer = load_tokenizer(non_square_folder)
    assert (tokenizer.grid, tokenizer.codebook_size, tokenizer.image_size) == ((4, 6), CODEBOOK_SIZE, (8, 12))

    # encode_dataset: the grey 16×16 images made what the tokenizer reads (8×12, RGB, [-1, 1]), codes in uint16.
    encoded = encode_dataset(tokenizer, train_split, batch_size=16)
    assert encoded.features["input_ids"].feature.dtype == "uint16"
    assert encoded.features["input_ids"].length == encoded.features["input_ids_flipped"].length == 24
    metadata = token_dataset_metadata(encoded)
    assert metadata["grid"] == [4, 6] and "grid_size" not in metadata and metadata["codebook_size"] == CODEBOOK_SIZE
    assert metadata["tokenizer_hash"] == tokenizer.tokenizer_hash() and layout_grid(metadata) == (4, 6)

    processor = LarpImageProcessor.from_tokenizer(tokenizer)
    pixel_values = processor(train_split[:5]["image"], return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (5, 3, 8, 12) and -1.0 <= float(pixel_values.min()) < float(pixel_values.max()) <= 1.0
    expected = tokenizer.encode(pixel_values).flatten(1)  # (5, 24)
    assert np.array_equal(np.asarray(encoded[:5]["input_ids"]), expected.numpy())
    assert np.array_equal(np.asarray(encoded[:5]["input_ids_flipped"]), tokenizer.encode(pixel_values.flip(-1)).flatten(1).numpy())
    assert len(np.unique(np.asarray(encoded["input_ids"]))) > 4  # not a constant grid
    # A tokenizer cast to bfloat16 still encodes in float32: the same codes.
    tokenizer.to(torch.bfloat16)
    assert encode_dataset(tokenizer, train_split.select(range(5)), batch_size=5)["input_ids"] == encoded[:5]["input_ids"]

    check_token_dataset(
        encoded, tokenizer_hash=tokenizer.tokenizer_hash(), grid=tokenizer.grid, codebook_size=CODEBOOK_SIZE,
        num_classes=2,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"4×6 grid, but the tokenizer \(and a prior over its codes\) has a 6×4 grid.*Re-encode"):
        check_token_dataset(encoded, grid=(6, 4))

    # The prior: vocabulary and positions from the tokenizer, the grid stored as (h, w), its hash taken from it.
    config = prior_config(tokenizer, preset="tiny", num_classes=2)
    larp = prior_metadata(config)
    assert larp["grid"] == [4, 6] and "grid_size" not in larp and larp["tokenizer_hash"] == tokenizer.tokenizer_hash()
    assert config.vocab_size == CODEBOOK_SIZE + 1 + 2 + 1 and config.n_positions == 2 + 24
    prior = GPT2LMHeadModel(config)
    set_sampling_defaults(prior)
    assert prior.generation_config.max_new_tokens == 24

    # One training step on a collated batch.
    collator = LarpPriorCollator.from_prior_config(config, seed=0)
    batch = collator([encoded[i] for i in range(8)])
    assert batch["input_ids"].shape == (8, 26) and int(batch["input_ids"][:, 2:].max()) < CODEBOOK_SIZE
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-2)
    before = prior.transformer.wte.weight.detach().clone()
    loss = prior(**batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, prior.transformer.wte.weight)

    # check_pair: the tokenizer (loaded again) is accepted; another tokenizer's prior is refused.
    check_pair(load_tokenizer(non_square_folder), prior)
    other_weights = DiffusersVQTokenizer(
        large_codebook_vq_model(seed=3), value_range=(-1.0, 1.0), image_size=(8, 12)
    )
    with pytest.raises(ValueError, match="trained on codes of tokenizer"):
        check_pair(other_weights, prior)
    other_grid = DiffusersVQTokenizer(large_codebook_vq_model(), value_range=(-1.0, 1.0), image_size=(8, 8))
    with pytest.raises(ValueError, match="models a 4×6 grid but the tokenizer has a 4×4 grid"):
        check_pair(other_grid, prior)
    with pytest.raises(ValueError, match="codebook_size = 300 but the tokenizer has codebook_size = 32"):
        check_pair(DiffusersVQTokenizer(tiny_vq_model(), value_range=(-1.0, 1.0), image_size=(8, 12)), prior)


def test_codes_outside_the_codebook_and_grids_that_do_not_match_are_refused_naming_the_fix():
    metadata = make_metadata("abc", (4, 6), CODEBOOK_SIZE, flip_augment=False)
    features = datasets.Features({"input_ids": code_feature(metadata)})
    assert features["input_ids"].feature.dtype == "uint16"
    tokens = datasets.Dataset.from_dict({"input_ids": [[5] * 24, [299] * 23 + [400]]}, features=features)
    with pytest.raises(ValueError, match=r"code 400, outside the codebook's \[0, 300\).*Re-encode"):
        check_token_dataset(tokens, grid=(4, 6), codebook_size=CODEBOOK_SIZE)
    with pytest.raises(ValueError, match=r"codebook_size = 300, but the tokenizer has codebook_size = 512.*Re-encode"):
        check_token_dataset(tokens, codebook_size=512)
    with pytest.raises(ValueError, match="records grid_size = 4, but the tokenizer has grid_size = 8"):
        check_token_dataset(
            datasets.Dataset.from_dict(
                {"input_ids": [[0] * 16]}, features=datasets.Features({"input_ids": code_feature(make_metadata("abc", 4, 16))})
            ),
            grid=(8, 8),
        )
    # 65,536 codes still fit uint16; one more needs uint32.
    assert code_feature(make_metadata("abc", 2, 2**16)).feature.dtype == "uint16"
    assert code_feature(make_metadata("abc", 2, 2**16 + 1)).feature.dtype == "uint32"


def test_a_16x16_grid_of_256_tokens_trains_a_step(train_split):
    # Downsample 2 at 32×32 pixels: 16×16 codes.
    tokenizer = DiffusersVQTokenizer(tiny_vq_model(sample_size=32), value_range=(-1.0, 1.0))
    assert tokenizer.grid == (16, 16)
    encoded = encode_dataset(tokenizer, train_split.select(range(4)), batch_size=4, flip_augment=False)
    metadata = token_dataset_metadata(encoded)
    assert (metadata["grid"], metadata["grid_size"]) == ([16, 16], 16) and encoded.features["input_ids"].length == 256
    assert encoded.features["input_ids"].feature.dtype == "uint8"
    config = prior_config(tokenizer, preset="tiny")
    assert config.n_positions == 257 and prior_metadata(config)["grid_size"] == 16
    prior = GPT2LMHeadModel(config)
    batch = LarpPriorCollator.from_prior_config(config)([encoded[i] for i in range(4)])
    assert batch["input_ids"].shape == (4, 257)
    prior(**batch).loss.backward()
    check_pair(tokenizer, prior)


def test_a_32x32_grid_of_32768_codes_gets_1025_positions():
    table = torch.nn.Embedding(32768, 3)
    tokenizer = wrap_tokenizer(
        table,
        encode=lambda x: torch.zeros(x.shape[0], 32, 32, dtype=torch.long),
        decode=lambda codes: table(codes).permute(0, 3, 1, 2),
        codebook_size=32768, grid=(32, 32), image_size=(32, 32), num_channels=3, value_range=(-1.0, 1.0),
    )  # fmt: skip
    config = prior_config(tokenizer, preset="tiny", num_classes=10)
    assert config.n_positions == 2 + 1024 and config.vocab_size == 32768 + 1 + 10 + 1
    assert make_metadata("abc", tokenizer.grid, tokenizer.codebook_size)["grid"] == [32, 32]
    prior = GPT2LMHeadModel(config)
    set_sampling_defaults(prior)
    assert prior.generation_config.max_new_tokens == 1024
    logits = prior(torch.zeros(1, 1026, dtype=torch.long)).logits  # the whole sequence fits the positions
    assert logits.shape == (1, 1026, config.vocab_size)


def test_recipes_take_a_folder_saved_by_vqmodel_alone(tmp_path, tiny_image_dataset_dir, train_split):
    # What a user holds: VQModel.save_pretrained and nothing of ours. 300 codes on an 8×8 grid at 16×16 pixels.
    model = large_codebook_vq_model()
    model.save_pretrained(tmp_path / "vq")
    tokens = tmp_path / "tokens"
    common = ["--vqvae", tmp_path / "vq", "--dataset", tiny_image_dataset_dir, "--batch_size", 16]
    result = run_recipe("encode_dataset", *common, "--output_dir", tokens)  # forked from the preloaded server
    assert "has no LarpImageProcessor" in result.stdout and "8×8 codes" in result.stdout
    encoded = datasets.load_from_disk(str(tokens))
    tokenizer = load_tokenizer(tmp_path / "vq")
    assert encoded["train"].features["input_ids"].feature.dtype == "uint16"
    assert token_dataset_metadata(encoded["train"])["tokenizer_hash"] == tokenizer.tokenizer_hash()
    # Row for row what encode_dataset gives in this process.
    assert encoded["train"][:8]["input_ids"] == encode_dataset(tokenizer, train_split.select(range(8)), batch_size=8)["input_ids"]
    summary = json.loads((tokens / "larp_token_dataset.json").read_text())
    assert summary["grid"] == [8, 8] and summary["codebook_size"] == CODEBOOK_SIZE

    output_dir = tmp_path / "prior"
    run_recipe(
        "train_prior", "--vqvae", tmp_path / "vq", "--token_dataset", tokens, "--preset", "tiny", "--num_classes", 2,
        "--train_batch_size", 8, "--eval_batch_size", 16, "--lr_warmup_steps", 0, "--max_steps", 1, "--output_dir", output_dir,
    )  # fmt: skip
    prior = AutoModelForCausalLM.from_pretrained(output_dir)
    larp = prior_metadata(prior.config)
    assert larp["grid"] == [8, 8] and larp["codebook_size"] == CODEBOOK_SIZE and prior.config.n_positions == 2 + 64
    check_pair(tokenizer, prior)
