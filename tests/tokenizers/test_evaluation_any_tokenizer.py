"""Evaluation with a tokenizer that is not ours: `evaluate_pipeline`, `sweep_pipeline` and the memorisation check on a
pipeline over a diffusers VQModel with a non-square 4×6 grid of 300 codes, and one with a 16×16 grid of 32,768 codes;
the memorisation check at 32×32 grids of 32,768 codes, in the integer types token datasets store."""

import datasets
import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel


diffusers = pytest.importorskip("diffusers")

from larp_hf import LarpImageProcessor, LarpPipeline, encode_dataset, load_image_dataset, prior_config  # noqa: E402
from larp_hf.data.token_dataset import code_feature, make_metadata  # noqa: E402
from larp_hf.evaluation import (  # noqa: E402
    FeatureNetwork,
    evaluate_pipeline,
    evaluation_markdown,
    image_batch,
    memorisation,
    nearest_hamming_distances,
    real_image_dataset,
    reconstruct,
    sample_scores,
    sweep_pipeline,
)
from larp_hf.evaluation.feature_networks import to_pixel_values  # noqa: E402
from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel  # noqa: E402
from larp_hf.tokenizers.adapter_diffusers import DiffusersVQTokenizer  # noqa: E402

from ..conftest import spread_features  # noqa: E402
from .test_downstream import large_codebook_vq_model  # noqa: E402


def non_square_pipeline(num_classes: int = 2) -> LarpPipeline:
    """A VQModel read at 8×12 pixels (a 4×6 grid of 300 codes, RGB in [-1, 1]) and a tiny GPT-2 prior over it."""
    tokenizer = DiffusersVQTokenizer(large_codebook_vq_model(), value_range=(-1.0, 1.0), image_size=(8, 12))
    torch.manual_seed(0)
    prior = GPT2LMHeadModel(prior_config(tokenizer, preset="tiny", num_classes=num_classes))
    return LarpPipeline(tokenizer, prior, LarpImageProcessor.from_tokenizer(tokenizer))


def large_grid_pipeline() -> LarpPipeline:
    """A VQModel with 32,768 codes read at 32×32 pixels (a 16×16 grid) and a tiny unconditional GPT-2 prior."""
    torch.manual_seed(0)
    model = diffusers.VQModel(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, num_vq_embeddings=2**15, norm_num_groups=4, sample_size=32,
    ).eval()  # fmt: skip
    with torch.no_grad():  # codes near the latents of images (diffusers draws them far away), so inputs use many
        latents = model.encode(torch.rand(4, 3, 32, 32) * 2 - 1).latents.permute(0, 2, 3, 1).reshape(-1, 4)
        picked = latents[torch.randint(len(latents), (2**15,))]
        model.quantize.embedding.weight.copy_(picked + 0.05 * latents.std() * torch.randn_like(picked))
    tokenizer = DiffusersVQTokenizer(model, value_range=(-1.0, 1.0))
    prior = GPT2LMHeadModel(prior_config(tokenizer, preset="tiny"))
    return LarpPipeline(tokenizer, prior, LarpImageProcessor.from_tokenizer(tokenizer))


def feature_network(channels: int, image_size: tuple[int, int]) -> FeatureNetwork:
    """An untrained 4-feature classifier (spread: not degenerate); images smaller than its square input are padded into it (centred)."""
    side = max(image_size)
    torch.manual_seed(0)
    config = LarpClassifierConfig(
        image_size=side, in_channels=channels, hidden_channels=[8], feature_dim=4, num_classes=2
    )
    processor = LarpImageProcessor(
        num_channels=channels, size={"height": side, "width": side}, do_pad=True,
        native_size={"height": image_size[0], "width": image_size[1]},
    )  # fmt: skip
    model = spread_features(LarpClassifierModel(config))
    return FeatureNetwork(model, f"{image_size[0]}×{image_size[1]} features", processor)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def brute_force_nearest(generated: torch.Tensor, training: torch.Tensor) -> torch.Tensor:
    """The whole (N, M, h·w) comparison at once, in int64."""
    return (generated.flatten(1).long()[:, None] != training.flatten(1).long()[None]).sum(-1).min(1).values


@pytest.fixture(scope="module")
def train_split(tiny_image_dataset_dir):
    return load_image_dataset(tiny_image_dataset_dir, split="train")


def test_evaluate_and_sweep_a_pipeline_over_a_non_square_vqmodel_grid(tiny_image_dataset_dir, train_split, tmp_path):
    pipeline = non_square_pipeline()
    network = feature_network(3, (8, 12))
    tokens = encode_dataset(pipeline.vqvae, train_split, batch_size=16)  # uint16 codes, mirrored grids too
    assert tokens.features["input_ids"].feature.dtype == "uint16"
    datasets.DatasetDict({"train": tokens}).save_to_disk(str(tmp_path / "tokens"))
    options = {"dataset": tiny_image_dataset_dir, "num_samples": 10, "batch_size": 4, "cache_dir": tmp_path / "cache"}
    results = evaluate_pipeline(pipeline, network, token_dataset=tmp_path / "tokens", **options)

    # The scores are those of the pipeline's own 8×12 samples and of the tokenizer's reconstructions.
    real, _ = real_image_dataset(tiny_image_dataset_dir, "test", (8, 12), 3)
    real_images = image_batch(real, range(len(real)))
    assert real_images.shape == (16, 3, 8, 12)
    real_features = network(real_images)
    samples = pipeline(num_images=10, seed=0, batch_size=4, output_type="pt")  # the classes in turn
    assert samples.images.shape == (10, 3, 8, 12) and samples.codes.shape == (10, 4, 6)
    assert results["samples"] == pytest.approx(sample_scores(real_features, network(samples.images)), rel=1e-9)
    floor = sample_scores(real_features, network(reconstruct(pipeline, real_images[:10])))
    assert results["reconstructions"] == pytest.approx(floor, rel=1e-9)

    # Memorisation: every sampled 4×6 grid against the training grids and their mirrors, as stored (uint16).
    training = torch.cat([torch.tensor(tokens["input_ids"]), torch.tensor(tokens["input_ids_flipped"])])
    nearest = brute_force_nearest(samples.codes, training)
    memo = results["memorisation"]
    assert memo["grid"] == [4, 6] and memo["codes_per_grid"] == 24 and len(memo["hamming_to_nearest_histogram"]) == 25
    assert memo["hamming_to_nearest_histogram"] == torch.bincount(nearest, minlength=25).tolist()
    assert memo["hamming_to_nearest_mean"] == pytest.approx(nearest.double().mean().item())
    assert "4×6 grids, 24 codes per grid" in evaluation_markdown(results)

    # Without a token dataset, the training split is encoded by the tokenizer from the real images at 8×12.
    encoded = evaluate_pipeline(pipeline, network, **options)
    baseline, _ = real_image_dataset(tiny_image_dataset_dir, "train", (8, 12), 3)
    baseline_codes = pipeline.vqvae.encode(to_pixel_values(pipeline.image_processor, image_batch(baseline, range(64))))
    expected = torch.bincount(brute_force_nearest(samples.codes, baseline_codes), minlength=25).tolist()
    assert encoded["memorisation"]["hamming_to_nearest_histogram"] == expected
    assert encoded["samples"] == results["samples"]

    # The sweep samples the same sequence for each setting: its (1.0, off) row is evaluate's samples.
    swept = sweep_pipeline(pipeline, network, [1.0, 0.5], [0, 16], **options)
    assert [(row["temperature"], row["top_k"]) for row in swept["rows"]] == [(1.0, 0), (0.5, 0), (1.0, 16), (0.5, 16)]
    default_row = {k: v for k, v in swept["rows"][0].items() if k in results["samples"]}
    assert default_row == pytest.approx(results["samples"], rel=1e-9)
    assert len({row["fid"] for row in swept["rows"]}) == 4

    # A token dataset of another tokenizer (other weights, the same grid) is refused before any sampling.
    other = DiffusersVQTokenizer(large_codebook_vq_model(seed=3), value_range=(-1.0, 1.0), image_size=(8, 12))
    other_pipeline = LarpPipeline(other, GPT2LMHeadModel(prior_config(other, preset="tiny", num_classes=2)),
                                          LarpImageProcessor.from_tokenizer(other))  # fmt: skip
    with pytest.raises(ValueError, match="was made by tokenizer .* but the tokenizer here is"):
        evaluate_pipeline(other_pipeline, network, token_dataset=tmp_path / "tokens", **options)


def test_evaluate_a_16x16_grid_of_32768_codes_finds_a_planted_copy(tiny_image_dataset_dir, tmp_path):
    pipeline = large_grid_pipeline()
    tokenizer = pipeline.vqvae
    assert tokenizer.grid == (16, 16) and tokenizer.codebook_size == 2**15
    samples = pipeline(num_images=10, seed=0, batch_size=5, output_type="pt")
    assert samples.images.shape == (10, 3, 32, 32) and int(samples.codes.max()) > 2**8  # codes beyond uint8

    # Training grids: random ones, a copy of sample 3 and sample 7 with 5 codes changed, stored as encode_dataset
    # stores them (uint16 for 32,768 codes).
    generator = torch.Generator().manual_seed(0)
    training = torch.randint(0, 2**15, (40, 256), generator=generator)
    training[11] = samples.codes[3].flatten()
    training[29] = samples.codes[7].flatten()
    training[29, :5] = (training[29, :5] + 1) % 2**15
    metadata = make_metadata(tokenizer.tokenizer_hash(), tokenizer.grid, tokenizer.codebook_size, flip_augment=False)
    features = datasets.Features({"input_ids": code_feature(metadata)})
    assert features["input_ids"].feature.dtype == "uint16"
    split = datasets.Dataset.from_dict({"input_ids": training.numpy().astype(np.uint16)}, features=features)
    datasets.DatasetDict({"train": split}).save_to_disk(str(tmp_path / "tokens"))

    results = evaluate_pipeline(
        pipeline, feature_network(3, (32, 32)), dataset=tiny_image_dataset_dir, num_samples=10, batch_size=5,
        token_dataset=tmp_path / "tokens", cache_dir=tmp_path / "cache",
    )  # fmt: skip
    memo = results["memorisation"]
    nearest = brute_force_nearest(samples.codes, training)
    assert nearest[3] == 0 and nearest[7] <= 5
    assert memo["exact_copies"] == pytest.approx(float((nearest == 0).double().mean())) and memo["exact_copies"] >= 0.1
    assert memo["hamming_to_nearest_histogram"] == torch.bincount(nearest, minlength=257).tolist()
    assert memo["grid"] == [16, 16] and memo["codes_per_grid"] == 256
    assert all(np.isfinite(results[part]["fid"]) for part in ("samples", "reconstructions", "real_baseline"))


def test_memorisation_at_32x32_grids_of_32768_codes_in_blocks_and_in_the_stored_types():
    generator = torch.Generator().manual_seed(0)
    generated = torch.randint(0, 2**15, (6, 32, 32), generator=generator)  # int64, as a caller may hold them
    training = torch.randint(0, 2**15, (300, 1024), generator=generator)
    training[123] = generated[2].flatten()
    training[250] = generated[4].flatten()
    training[250, 500:503] = (training[250, 500:503] + 7) % 2**15
    expected = brute_force_nearest(generated, training)
    assert expected[2] == 0 and expected[4] == 3

    stored = training.numpy().astype(np.uint16)  # what a token dataset gives, batch by batch
    batches = (torch.from_numpy(stored[start : start + 64]) for start in range(0, 300, 64))
    # Blocks of 4 generated × 2 training grids × 1,024 codes (a bool and an int16 each): many blocks per batch.
    nearest = nearest_hamming_distances(generated, batches, chunk_size=4, block_bytes=3 * 4 * 2 * 1024)
    assert torch.equal(nearest, expected)
    summary = memorisation(generated, torch.from_numpy(stored))
    assert summary["codes_per_grid"] == 1024 and summary["exact_copies"] == pytest.approx(1 / 6)
    assert summary["hamming_to_nearest_histogram"][0] == 1 and summary["hamming_to_nearest_histogram"][3] == 1


def test_training_codes_beyond_the_generated_codes_type_are_never_wrapped_onto_them():
    # Generated grids held as uint8 (a 256-code type); a training grid equal to one of them but for code 300 at one
    # place, and 300 = 44 mod 256: compared in uint8, it would count as a copy.
    generated = torch.tensor([[44, 1, 2, 3]], dtype=torch.uint8)
    training = torch.tensor([[300, 1, 2, 3], [9, 9, 9, 9]])
    assert nearest_hamming_distances(generated, training).tolist() == [1]
    assert nearest_hamming_distances(generated, [training[1:], training[:1].to(torch.uint16)]).tolist() == [1]
    with pytest.raises(ValueError, match="`training_codes` holds negative values"):
        nearest_hamming_distances(generated, torch.tensor([[-1, 1, 2, 3]]))
    with pytest.raises(ValueError, match="`generated_codes` must be integer codebook indices"):
        nearest_hamming_distances(generated.float(), training)
