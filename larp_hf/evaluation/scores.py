"""
Scores of a pipeline's samples on a feature network: FID, precision, recall, density and coverage against a real
split; the tokenizer's floor; a real-vs-real baseline; memorisation in code space; a temperature × top-k sweep.
Each returns plain values (dicts); `larp_hf.evaluation.reports` turns them into tables, files and model-card records.
"""

import logging
import os
from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from ..generation import CodebookLogitsProcessor
from ..metrics import density_coverage, frechet_distance, precision_recall
from .feature_networks import FeatureNetwork, to_pixel_values
from .real_data import cached_real_features, real_images, training_code_grids


logger = logging.getLogger(__name__)
BLOCK_BYTES = 256 * 2**20  # the largest pairwise block (code comparisons) held at once


def sample_scores(real_features: torch.Tensor, generated_features: torch.Tensor, k: int = 3) -> dict:
    """FID, precision, recall (k), density and coverage (k=5) of one generated feature set against a real one."""
    return {
        "fid": frechet_distance(real_features, generated_features),
        **precision_recall(real_features, generated_features, k=k),
        **density_coverage(real_features, generated_features, k=5),
    }


def nearest_hamming_distances(
    generated_codes: torch.Tensor,
    training_codes: torch.Tensor | Iterable[torch.Tensor],
    chunk_size: int = 64,
    block_bytes: int = BLOCK_BYTES,
) -> torch.Tensor:
    """
    (N,) long: for each generated grid, the number of codes (out of h·w) in which it differs from the nearest
    training grid. `training_codes` is one (M, ...) tensor or an iterable of such batches (read once, e.g. from a token
    dataset); `chunk_size` generated grids are compared with as many training grids as keep the (chunk, rows, h·w)
    comparison within `block_bytes`, on the device of `generated_codes`. Where no training grid was given, the
    distance is h·w + 1.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer (generated grids per block), got {chunk_size!r}.")
    generated = generated_codes.flatten(1)
    codes_per_grid = generated.shape[1]
    nearest = torch.full((len(generated),), codes_per_grid + 1, dtype=torch.long, device=generated.device)
    rows_per_block = max(1, block_bytes // (chunk_size * codes_per_grid))
    batches = [training_codes] if isinstance(training_codes, torch.Tensor) else training_codes
    for batch in batches:
        batch = batch.flatten(1)
        if batch.shape[1] != codes_per_grid:
            raise ValueError(
                f"`generated_codes` grids have {codes_per_grid} codes but `training_codes` grids {batch.shape[1]}."
            )
        batch = batch.to(device=generated.device, dtype=generated.dtype)
        for rows in batch.split(rows_per_block):
            for start in range(0, len(generated), chunk_size):
                # (chunk, rows); int32 sums run ~3× faster than the default int64 on CPU
                differing = (generated[start : start + chunk_size, None, :] != rows[None]).sum(-1, dtype=torch.int32)
                block = nearest[start : start + chunk_size]
                torch.minimum(block, differing.min(dim=1).values.long(), out=block)
    return nearest.cpu()


def memorisation_summary(nearest: torch.Tensor, codes_per_grid: int) -> dict:
    """The memorisation record of `nearest_hamming_distances`: copies, mean, quantiles and histogram."""
    if (nearest > codes_per_grid).any():
        raise ValueError("No training grids were given: there is nothing to measure memorisation against.")
    levels = {"min": 0.0, "p5": 0.05, "p25": 0.25, "median": 0.5, "p75": 0.75, "max": 1.0}
    quantiles = torch.quantile(nearest.double(), torch.tensor(list(levels.values()), dtype=torch.float64))
    return {
        # A copy is a grid at distance 0: the same bounded pass answers both questions.
        "exact_copies": float((nearest == 0).double().mean()),
        "hamming_to_nearest_mean": float(nearest.double().mean()),
        "hamming_to_nearest_quantiles": dict(zip(levels, quantiles.tolist(), strict=True)),
        "hamming_to_nearest_histogram": torch.bincount(nearest, minlength=codes_per_grid + 1).tolist(),
        "codes_per_grid": codes_per_grid,
    }


def memorisation(
    generated_codes: torch.Tensor, training_codes: torch.Tensor | Iterable[torch.Tensor], chunk_size: int = 64
) -> dict:
    """
    How close generated code grids come to training grids: the fraction identical to one, and the distribution of the
    Hamming distance (number of differing codes out of h·w) to the nearest training grid. `training_codes` is a
    tensor of grids or an iterable of batches of them; the comparison runs in bounded blocks
    (`nearest_hamming_distances`).
    """
    generated = generated_codes.flatten(1)
    return memorisation_summary(nearest_hamming_distances(generated, training_codes, chunk_size), generated.shape[1])


@torch.no_grad()
def encode_images(pipeline, images: torch.Tensor, batch_size: int = 500, desc: str = "Encoding") -> torch.Tensor:
    """(N, C, H, W) uint8 images -> (N, h, w) codes of the pipeline's tokenizer."""
    vqvae = pipeline.vqvae
    return torch.cat([
        vqvae.encode(to_pixel_values(pipeline.image_processor, chunk).to(vqvae.device)).cpu()
        for chunk in tqdm(images.split(batch_size), desc=desc)
    ])  # fmt: skip


@torch.no_grad()
def reconstruct(pipeline, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, C, H, W) uint8 real images -> the tokenizer's reconstructions, (N, C, H, W) in [0, 1]."""
    codes = encode_images(pipeline, images, batch_size, desc="Tokenizer reconstructions")
    vqvae, postprocess = pipeline.vqvae, pipeline.image_processor.postprocess
    chunks = codes.split(batch_size)
    return torch.cat([postprocess(vqvae.decode(chunk.to(vqvae.device)), output_type="pt") for chunk in chunks])


def _check_setup(pipeline, network: FeatureNetwork, num_samples: int):
    """What evaluate and sweep refuse before any sampling: images the network cannot take, too few samples."""
    network.check_images(pipeline.vqvae.config.in_channels, pipeline.vqvae.config.image_size, "the pipeline's images")
    dim = network.feature_dim
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= dim:
        raise ValueError(
            f"`num_samples` = {num_samples!r} is too few for {dim}-dimensional features: FID needs more samples than "
            f"dimensions (at least {dim + 1}; thousands for stable numbers)."
        )


def _real_features(pipeline, network, dataset: str, split: str, data_dir, cache_dir):
    """The real split at the pipeline's image size, and its (cached) features."""
    config = pipeline.vqvae.config
    images, fingerprint = real_images(dataset, split, config.image_size, config.in_channels, data_dir)
    return images, cached_real_features(network, images, fingerprint, cache_dir, desc=f"{dataset} {split}")


def _sample_features(pipeline, network: FeatureNetwork, num_samples: int, seed: int, batch_size: int, **sampling):
    output = pipeline(num_images=num_samples, batch_size=batch_size, seed=seed, output_type="pt", **sampling)
    return network(output.images, desc="Features of samples"), output.codes


def _settings(pipeline, network: FeatureNetwork, dataset: str, real_split: str, num_samples: int, seed: int) -> dict:
    return {
        "dtype": str(pipeline.dtype).removeprefix("torch."),  # bfloat16 scores differ a little from float32 ones
        "num_samples": num_samples,
        "seed": seed,
        "dataset": dataset,
        "real_split": real_split,
        "feature_network": network.name,
        "feature_network_sha256": network.weights_sha256,
    }


def evaluate_pipeline(
    pipeline,
    network: FeatureNetwork,
    dataset: str = "fashion_mnist",
    real_split: str = "test",
    baseline_split: str = "train",
    num_samples: int = 10000,
    seed: int = 0,
    batch_size: int = 256,
    token_dataset: str | os.PathLike | None = None,
    data_dir=None,
    cache_dir=None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
) -> dict:
    """
    Sample scores; the same scores for the tokenizer's reconstructions of the real split (the floor a prior cannot
    beat) and for `num_samples` real images of `baseline_split` (what real data scores at this n); the memorisation
    check against the training code grids (of `token_dataset`, else `baseline_split` encoded by the tokenizer).
    Sampling settings left as `None` are the pipeline's defaults. Returns `samples`, `reconstructions`,
    `real_baseline`, `memorisation` and `settings` (what was measured how).
    """
    _check_setup(pipeline, network, num_samples)
    chosen = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
    sampling = {**pipeline.sampling_defaults(), **{k: v for k, v in chosen.items() if v is not None}}
    CodebookLogitsProcessor(pipeline.codebook_size, **sampling)  # refuses bad settings before any work
    images, real_features = _real_features(pipeline, network, dataset, real_split, data_dir, cache_dir)

    generated_features, codes = _sample_features(pipeline, network, num_samples, seed, batch_size, **sampling)
    results = {"samples": sample_scores(real_features, generated_features)}

    floor_images = images[:num_samples]
    results["reconstructions"] = sample_scores(real_features, network(reconstruct(pipeline, floor_images)))

    baseline_images, baseline_features = _real_features(pipeline, network, dataset, baseline_split, data_dir, cache_dir)
    chosen_rows = torch.randperm(len(baseline_images), generator=torch.Generator().manual_seed(seed))[:num_samples]
    results["real_baseline"] = sample_scores(real_features, baseline_features[chosen_rows])

    if token_dataset is not None:
        training_codes = training_code_grids(token_dataset, baseline_split, pipeline.vqvae.tokenizer_hash())
    else:
        training_codes = encode_images(pipeline, baseline_images, desc="Encoding training grids")
    results["memorisation"] = memorisation(codes, training_codes)
    results["settings"] = {
        **_settings(pipeline, network, dataset, real_split, num_samples, seed),
        "sampling": sampling,
        "real_images": len(images),
        "reconstructed_images": len(floor_images),
        "baseline_split": baseline_split,
        "baseline_images": len(chosen_rows),
    }
    return results


def sweep_pipeline(
    pipeline,
    network: FeatureNetwork,
    temperatures: list[float],
    top_ks: list[int],
    dataset: str = "fashion_mnist",
    real_split: str = "test",
    num_samples: int = 2000,
    seed: int = 0,
    batch_size: int = 256,
    data_dir=None,
    cache_dir=None,
) -> dict:
    """
    Sample scores for every (temperature, top-k) pair of `temperatures` × `top_ks` (top-k 0 = off), the same seed for
    each, top-p at the pipeline's default. Returns `rows` (one per pair: its sampling settings and scores), `best`
    (the row of the lowest FID) and `settings`.
    """
    _check_setup(pipeline, network, num_samples)
    top_p = pipeline.sampling_defaults()["top_p"]
    pairs = [(t, k) for k in top_ks for t in temperatures]
    if not pairs:
        raise ValueError("`temperatures` and `top_ks` must each hold at least one value.")
    for temperature, top_k in pairs:  # fail before hours of sampling
        try:
            CodebookLogitsProcessor(pipeline.codebook_size, temperature, top_k, top_p)
        except ValueError as error:
            raise ValueError(f"`temperatures` × `top_ks` holds a setting the pipeline cannot sample: {error}") from None
    images, real_features = _real_features(pipeline, network, dataset, real_split, data_dir, cache_dir)
    rows = []
    for temperature, top_k in tqdm(pairs, desc="Sweep"):
        sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        features, _ = _sample_features(pipeline, network, num_samples, seed, batch_size, **sampling)
        rows.append({**sampling, **sample_scores(real_features, features)})
    settings = {**_settings(pipeline, network, dataset, real_split, num_samples, seed), "real_images": len(images)}
    return {"rows": rows, "best": best_setting(rows), "settings": settings}


def best_setting(rows: list[dict]) -> dict:
    """The row of the lowest FID."""
    return min(rows, key=lambda row: row["fid"])


__all__ = [
    "best_setting",
    "encode_images",
    "evaluate_pipeline",
    "memorisation",
    "memorisation_summary",
    "nearest_hamming_distances",
    "reconstruct",
    "sample_scores",
    "sweep_pipeline",
]
