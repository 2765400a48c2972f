"""
Scores of a pipeline's samples on a feature network: FID, precision, recall, density and coverage against a real
split; the tokenizer's floor; a real-vs-real baseline; memorisation in code space; a temperature × top-k sweep.
Each returns plain values (dicts); `larp_hf.evaluation.reports` turns them into tables, files and model-card records.

Memory grows with the features the statistics need ((n, D) float64) and the sampled code grids, never with the images:
samples are drawn a part at a time (`first_image_index`) and turned into features straight away; real images are read
from memory-mapped datasets a batch at a time; training grids are compared block by block. Under `accelerate launch`
(or torchrun) each process samples its share of the batches of the one seeded sequence, so the numbers are those of
one process.
"""

import logging
import os
from collections.abc import Iterable, Iterator

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..data.provenance import DatasetChoice, DatasetRecord, choose_dataset
from ..generation import CodebookLogitsProcessor
from ..generation.guidance import check_guidance_scale
from ..metrics import check_feature_spread, density_coverage, frechet_distance, precision_recall
from .feature_networks import FeatureNetwork, to_pixel_values
from .processes import batches_of_this_process, evaluation_state, from_main_process, gather_rows
from .real_data import (
    cached_real_features,
    code_grid_batches,
    image_batch,
    real_image_dataset,
    token_batch_rows,
    training_token_split,
)


logger = logging.getLogger(__name__)
# Peak memory does not grow with the number of samples: what is held at once is bounded by these (a few times each, in
# temporaries), whatever the sizes. Larger blocks gain little speed on a CPU.
BLOCK_BYTES = 64 * 2**20  # the largest pairwise block (feature distances, code comparisons)
SAMPLE_PART_BYTES = 64 * 2**20  # float32 images one pipeline call holds before they become features


def sample_scores(real_features: torch.Tensor, generated_features: torch.Tensor, k: int = 3) -> dict:
    """FID, precision, recall (k), density and coverage (k=5) of one generated feature set against a real one."""
    # Distance blocks of at most BLOCK_BYTES float64 (1024 rows, the metrics' default, up to 8,192 samples).
    chunk_size = max(1, min(1024, BLOCK_BYTES // (8 * max(len(real_features), len(generated_features)))))
    return {
        "fid": frechet_distance(real_features, generated_features),
        **precision_recall(real_features, generated_features, k=k, chunk_size=chunk_size),
        **density_coverage(real_features, generated_features, k=5, chunk_size=chunk_size),
    }


def _code_dtype(codebook_size: int) -> torch.dtype:
    """
    The narrowest type that holds every code, and that every device compares and NCCL sends once widened to int32: a
    grid of 1,024 codes of a 32,768-code codebook costs 2 KiB, not 8.
    """
    if codebook_size <= 2**8:
        return torch.uint8
    if codebook_size <= 2**15:
        return torch.int16
    return torch.int32 if codebook_size <= 2**31 else torch.int64


def _largest_code(codes: torch.Tensor, name: str) -> int:
    """The largest code of an integer tensor of codebook indices (-1 when empty); negative codes are refused."""
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"`{name}` must be integer codebook indices, got {codes.dtype}.")
    if codes.numel() == 0:
        return -1
    if codes.dtype in (torch.uint16, torch.uint32, torch.uint64):  # token datasets' types: torch has no max for them
        return int(codes.cpu().numpy().max())
    if int(codes.min()) < 0:
        raise ValueError(f"`{name}` holds negative values ({int(codes.min())}); codebook indices are >= 0.")
    return int(codes.max())


def nearest_hamming_distances(
    generated_codes: torch.Tensor,
    training_codes: torch.Tensor | Iterable[torch.Tensor],
    chunk_size: int = 64,
    block_bytes: int = BLOCK_BYTES,
) -> torch.Tensor:
    """
    (N,) long: for each generated grid, the number of codes (out of h·w) in which it differs from the nearest
    training grid. `training_codes` is one (M, ...) tensor or an iterable of such batches (read once, e.g. from a token
    dataset), of any integer type; `chunk_size` generated grids are compared with as many training grids as keep the
    (chunk, rows, h·w) comparison, and its sum, within `block_bytes`, on the device of `generated_codes`. Codes are
    compared in the narrowest integer type that holds the largest code seen so far (uint8 up to 256 codes, int16 up to
    32,768), whatever types they come in, so no code is wrapped onto another. Where no training grid was given, the
    distance is h·w + 1.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer (generated grids per block), got {chunk_size!r}.")
    given = generated_codes.flatten(1)
    codes_per_grid = given.shape[1]
    largest = _largest_code(given, "generated_codes")
    generated = given.to(_code_dtype(largest + 1))
    nearest = torch.full((len(given),), codes_per_grid + 1, dtype=torch.long, device=given.device)
    # Each compared code costs a bool and its copy in the sum's type (int16: the fastest here, and h·w < 2^15).
    sum_dtype = torch.int16 if codes_per_grid < 2**15 else torch.int32
    rows_per_block = max(1, block_bytes // ((1 + sum_dtype.itemsize) * chunk_size * codes_per_grid))
    batches = [training_codes] if isinstance(training_codes, torch.Tensor) else training_codes
    for batch in batches:
        batch = batch.flatten(1)
        if batch.shape[1] != codes_per_grid:
            raise ValueError(
                f"`generated_codes` grids have {codes_per_grid} codes but `training_codes` grids {batch.shape[1]}."
            )
        largest = max(largest, _largest_code(batch, "training_codes"))
        if _code_dtype(largest + 1) != generated.dtype:  # a training code the generated grids' type cannot hold
            generated = given.to(_code_dtype(largest + 1))
        # Cast a block at a time (a whole batch in another type would be a second copy of it), on the batch's device:
        # not every device converts uint16.
        for rows in batch.split(rows_per_block):
            rows = rows.to(generated.dtype).to(generated.device)
            for start in range(0, len(generated), chunk_size):
                differing = (generated[start : start + chunk_size, None, :] != rows[None]).sum(-1, dtype=sum_dtype)
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


def _tokenizer_device(pipeline) -> torch.device:
    """Where the pipeline's tokenizer computes: its own `device` where it says, else the pipeline's."""
    return getattr(pipeline.vqvae, "device", None) or pipeline.device


def _encode(pipeline, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 images -> (B, h, w) codes on the CPU."""
    pixel_values = to_pixel_values(pipeline.image_processor, images)  # float32, as every tokenizer encodes
    return pipeline.vqvae.encode(pixel_values.to(_tokenizer_device(pipeline))).cpu()


def _decode(pipeline, codes: torch.Tensor) -> torch.Tensor:
    """(B, h, w) codes -> (B, C, H, W) images in [0, 1] on the CPU."""
    pixel_values = pipeline.vqvae.decode(codes.long().to(_tokenizer_device(pipeline))).float()
    return pipeline.image_processor.postprocess(pixel_values, output_type="pt")


@torch.no_grad()
def encode_images(pipeline, images: torch.Tensor, batch_size: int = 500, desc: str = "Encoding") -> torch.Tensor:
    """(N, C, H, W) uint8 images -> (N, h, w) codes of the pipeline's tokenizer."""
    return torch.cat([_encode(pipeline, chunk) for chunk in tqdm(images.split(batch_size), desc=desc)])


@torch.no_grad()
def reconstruct(pipeline, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, C, H, W) uint8 real images -> the tokenizer's reconstructions, (N, C, H, W) in [0, 1]."""
    chunks = tqdm(images.split(batch_size), desc="Tokenizer reconstructions")
    return torch.cat([_decode(pipeline, _encode(pipeline, chunk)) for chunk in chunks])


def _check_setup(pipeline, network: FeatureNetwork, num_samples: int):
    """What evaluate and sweep refuse before any sampling: images the network cannot take, too few samples."""
    network.check_images(pipeline.vqvae.num_channels, _output_size(pipeline), "the pipeline's images")
    dim = network.feature_dim
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= dim:
        raise ValueError(
            f"`num_samples` = {num_samples!r} is too few for {dim}-dimensional features ({network.name}): FID needs "
            f"more samples than dimensions (at least {dim + 1}; thousands for stable numbers). Raise `num_samples`, "
            "or use a feature network with fewer features."
        )


def _output_size(pipeline) -> tuple[int, int]:
    """(H, W) of the pipeline's images: the dataset's own size when its tokenizer pads (`native_size`)."""
    size = pipeline.image_processor.output_size
    return size["height"], size["width"]


def choose_real_dataset(
    pipeline, dataset: str | None = None, image_column: str | None = None, label_column: str | None = None,
    data_dir=None,
) -> DatasetChoice:
    """
    The real images a pipeline's samples are compared with: `dataset` when given, else the dataset the pipeline
    records it was trained on (`card_info["training_data"]`, which `larp-hf assemble` writes; a pipeline assembled
    before records only the dataset's name, `card_info["dataset"]`), else Fashion-MNIST. `reason` says which.
    """
    card_info = getattr(pipeline, "card_info", None) or {}
    record = card_info.get("training_data")
    record = DatasetRecord.from_dict(record) if record else None
    if record is None and card_info.get("dataset"):
        record = DatasetRecord(source=card_info["dataset"])
    return choose_dataset(
        dataset, record, recorded_by="the pipeline", image_column=image_column, label_column=label_column,
        data_dir=data_dir,
    )  # fmt: skip


# Where `make quickstart`'s README steps put the Fashion-MNIST classifier (recipes/configs/classifier_fashion_mnist.yaml).
FASHION_MNIST_FEATURE_NETWORK = "outputs/features-fashion-mnist"


def default_feature_network(choice: DatasetChoice) -> str | None:
    """
    The feature network that scores samples against `choice`'s images when none is named: the quickstart's
    Fashion-MNIST classifier for Fashion-MNIST, and none for any other data. A classifier of one dataset is no
    measure of another's images, so other data names its own (a classifier trained on it, `inception`, `random`).
    """
    from ..pipelines.model_card import same_dataset

    return FASHION_MNIST_FEATURE_NETWORK if same_dataset(choice.source, "fashion_mnist") else None


def _real_split(pipeline, choice: DatasetChoice, split: str, state: PartialState):
    """
    A real split at the size of the pipeline's images (memory-mapped), its fingerprint, and what it is (the `source`
    its cached features are keyed by). Where the tokenizer pads the dataset's images rather than resizing them, real
    images are compared at their own size and pixels.
    """
    pads = pipeline.image_processor.native_size is not None
    size, channels = _output_size(pipeline), pipeline.vqvae.num_channels
    with state.main_process_first():  # the first process maps and caches the images; the others read its cache
        pixels, fingerprint = real_image_dataset(
            choice.source, split, size, channels, choice.data_dir, pad=pads,
            image_column=choice.image_column, label_column=choice.label_column,
        )  # fmt: skip
    source = {"dataset": choice.source, "split": split, "data_dir": choice.data_dir, "image_size": list(size),
              "channels": channels, "pad": pads, "column": choice.image_column or "image"}  # fmt: skip
    return pixels, fingerprint, source


def _check_spread(real_features: torch.Tensor | None, what: str, state: PartialState):
    """Before any sampling, on every process: real features that cannot give a FID above 0 are refused."""
    problem = None
    if state.is_main_process:
        try:
            check_feature_spread(real_features, what)
        except ValueError as error:
            problem = str(error)
    problem = from_main_process(problem, state)
    if problem:
        raise ValueError(problem)


def _check_real_size(network: FeatureNetwork, pixels, dataset: str, split: str, argument: str):
    """Before any sampling: FID's covariance of the real images of `split` needs more images than features."""
    dim = network.feature_dim
    if len(pixels) <= dim:
        raise ValueError(
            f"The {split!r} split of {dataset} has {len(pixels)} images, too few for FID on {dim}-dimensional "
            f"features ({network.name}): it needs more images than features (at least {dim + 1}; thousands for "
            f"stable numbers). Choose a larger split with `{argument}` (e.g. 'train'), or a feature network with "
            f"fewer features (a classifier from recipes/train_classifier.py, or `random`: 64)."
        )


@torch.no_grad()
def _sample_features(pipeline, network, num_samples: int, seed: int, batch_size: int, state, **sampling):
    """
    (num_samples, D) float64 features and (num_samples, h·w) codes of the seeded samples, on every process. Each
    process samples its share of the batches in parts of at most SAMPLE_PART_BYTES of images, keeps their features
    and codes, and drops the images.
    """
    tokenizer = pipeline.vqvae
    (height, width), (grid_height, grid_width) = tokenizer.image_size, tokenizer.grid  # need not be square
    image_bytes = 4 * tokenizer.num_channels * height * width  # the float32 pixels a call decodes
    batches_per_part = max(1, SAMPLE_PART_BYTES // (image_bytes * batch_size))
    share = batches_of_this_process(num_samples, batch_size, state)
    code_dtype = _code_dtype(pipeline.codebook_size)
    features = [torch.empty(0, network.feature_dim, dtype=torch.float64)]
    codes = [torch.empty(0, grid_height * grid_width, dtype=code_dtype)]
    for first in range(0, len(share), batches_per_part):
        part = share[first : first + batches_per_part]
        output = pipeline(
            num_images=part[-1].stop - part[0].start, batch_size=batch_size, seed=seed,
            first_image_index=part[0].start, output_type="pt", **sampling,
        )  # fmt: skip
        # A sampling batch at a time: one process and many feed the network the same batches.
        features += [network(images) for images in output.images.split(batch_size)]
        codes.append(output.codes.flatten(1).to(code_dtype))
    features = gather_rows(torch.cat(features), state)
    codes = gather_rows(torch.cat(codes).int(), state).to(code_dtype)  # NCCL sends no int16
    return features, codes


@torch.no_grad()
def _reconstruction_features(pipeline, network, pixels, num_images: int, batch_size: int, state) -> torch.Tensor:
    """(num_images, D) features of the tokenizer's reconstructions of the first `num_images` images of `pixels`."""
    share = batches_of_this_process(num_images, batch_size, state)
    features = [torch.empty(0, network.feature_dim, dtype=torch.float64)]
    for rows in tqdm(share, desc="Tokenizer reconstructions", disable=not state.is_main_process):
        features.append(network(_decode(pipeline, _encode(pipeline, image_batch(pixels, rows)))))
    return gather_rows(torch.cat(features), state)


def _training_grid_batches(pipeline, tokens, baseline, batch_size: int, state) -> Iterator[torch.Tensor]:
    """This process's share of the training grids: from the token dataset, else `baseline` encoded batch by batch."""
    if tokens is not None:
        rows_per_batch = min(token_batch_rows(tokens), -(-len(tokens) // state.num_processes))  # work for everyone
        for rows in batches_of_this_process(len(tokens), rows_per_batch, state):
            yield from code_grid_batches(tokens, rows)
        return
    for rows in tqdm(batches_of_this_process(len(baseline), batch_size, state), desc="Encoding training grids",
                     disable=not state.is_main_process):  # fmt: skip
        with torch.no_grad():
            yield _encode(pipeline, image_batch(baseline, rows)).flatten(1)


def _settings(
    pipeline, network: FeatureNetwork, choice: DatasetChoice, real_split: str, num_samples: int, seed: int
) -> dict:
    return {
        "dtype": str(pipeline.dtype).removeprefix("torch."),  # bfloat16 scores differ a little from float32 ones
        "num_samples": num_samples,
        "seed": seed,
        "dataset": choice.source,
        "dataset_reason": choice.reason,
        "real_split": real_split,
        "feature_network": network.name,
        "feature_network_sha256": network.weights_sha256,
    }


def evaluate_pipeline(
    pipeline,
    network: FeatureNetwork,
    dataset: str | None = None,
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
    guidance_scale: float | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> dict:
    """
    Sample scores; the same scores for the tokenizer's reconstructions of the real split (the floor a prior cannot
    beat) and for `num_samples` real images of `baseline_split` (what real data scores at this n); the memorisation
    check against the training code grids (of `token_dataset`, else `baseline_split` encoded by the tokenizer).
    Sampling settings left as `None` are the pipeline's defaults; a class-conditional pipeline samples as many images
    of each class, guided by `guidance_scale` (default: its stored scale). Returns `samples`, `reconstructions`,
    `real_baseline`, `memorisation` and `settings` (what was measured how).

    The real images are those of `dataset` (with `image_column` / `label_column`, as `load_image_dataset` reads
    them); by default, the dataset the pipeline records it was trained on, else Fashion-MNIST (`choose_real_dataset`;
    `settings["dataset_reason"]` says which).

    Under several processes (`accelerate launch`), each samples, reconstructs and compares its share; the scores are
    computed on the main process and returned on every process, equal to those of one process.
    """
    state = evaluation_state()
    _check_setup(pipeline, network, num_samples)
    chosen = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "guidance_scale": guidance_scale}
    sampling = {**pipeline.sampling_defaults(), **{k: v for k, v in chosen.items() if v is not None}}
    _check_sampling(pipeline, sampling)  # refuses bad settings before any work
    choice = choose_real_dataset(pipeline, dataset, image_column, label_column, data_dir)
    dataset = choice.source
    real, real_fingerprint, real_source = _real_split(pipeline, choice, real_split, state)
    baseline, baseline_fingerprint, baseline_source = _real_split(pipeline, choice, baseline_split, state)
    _check_real_size(network, real, dataset, real_split, "real_split")
    _check_real_size(network, baseline, dataset, baseline_split, "baseline_split")
    tokens = None  # a token dataset of another tokenizer is refused before any sampling
    tokenizer = pipeline.vqvae
    if token_dataset is not None:
        tokens = training_token_split(
            token_dataset, baseline_split, tokenizer.tokenizer_hash(), grid=tokenizer.grid,
            codebook_size=tokenizer.codebook_size,
        )  # fmt: skip
    real_features = cached_real_features(network, real, real_fingerprint, cache_dir=cache_dir,
                                         desc=f"{dataset} {real_split}", state=state, source=real_source)  # fmt: skip
    _check_spread(real_features, f"The features of {dataset} {real_split}", state)

    generated_features, codes = _sample_features(pipeline, network, num_samples, seed, batch_size, state, **sampling)
    floor_images = min(num_samples, len(real))
    floor_features = _reconstruction_features(pipeline, network, real, floor_images, batch_size, state)
    chosen_rows = torch.randperm(len(baseline), generator=torch.Generator().manual_seed(seed))[:num_samples]
    baseline_features = cached_real_features(network, baseline, baseline_fingerprint, chosen_rows.tolist(), cache_dir,
                                             desc=f"{dataset} {baseline_split} (baseline)", state=state,
                                             source=baseline_source)  # fmt: skip
    # Each process compares every sampled grid with its share of the training grids; the nearest of the shares wins.
    training_grids = _training_grid_batches(pipeline, tokens, baseline, batch_size, state)
    nearest = nearest_hamming_distances(codes.to(pipeline.device), training_grids)
    nearest = gather_rows(nearest[None], state).amin(dim=0)  # (processes, N) -> (N,)

    results = None
    if state.is_main_process:
        results = {
            "samples": sample_scores(real_features, generated_features),
            "reconstructions": sample_scores(real_features, floor_features),
            "real_baseline": sample_scores(real_features, baseline_features),
            "memorisation": {"grid": list(tokenizer.grid), **memorisation_summary(nearest, codes.shape[1])},
            "settings": {
                **_settings(pipeline, network, choice, real_split, num_samples, seed),
                "sampling": sampling,
                "real_images": len(real),
                "reconstructed_images": floor_images,
                "baseline_split": baseline_split,
                "baseline_images": len(chosen_rows),
            },
        }
    return from_main_process(results, state)


def _check_sampling(pipeline, sampling: dict):
    """A `ValueError` for settings the pipeline cannot sample (before hours of sampling)."""
    CodebookLogitsProcessor(
        pipeline.codebook_size, **{name: sampling[name] for name in ("temperature", "top_k", "top_p")}
    )
    check_guidance_scale(sampling["guidance_scale"], None, pipeline.num_classes)  # None: every class in turn


def sweep_pipeline(
    pipeline,
    network: FeatureNetwork,
    temperatures: list[float],
    top_ks: list[int],
    guidance_scales: list[float] | None = None,
    dataset: str | None = None,
    real_split: str = "test",
    num_samples: int = 2000,
    seed: int = 0,
    batch_size: int = 256,
    data_dir=None,
    cache_dir=None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> dict:
    """
    Sample scores for every setting of `temperatures` × `top_ks` (top-k 0 = off) × `guidance_scales` (class-conditional
    pipelines, which sample as many images of each class; default: the stored scale), the same seed for each, top-p at
    the pipeline's default. Returns `rows` (one per setting: its sampling settings and scores), `best` (the row of the
    lowest FID) and `settings`. The real images default as `evaluate_pipeline`'s do (`choose_real_dataset`).
    """
    state = evaluation_state()
    _check_setup(pipeline, network, num_samples)
    defaults = pipeline.sampling_defaults()
    top_p = defaults["top_p"]
    guidance_scales = [defaults["guidance_scale"]] if guidance_scales is None else list(guidance_scales)
    grid = [(t, k, g) for g in guidance_scales for k in top_ks for t in temperatures]
    if not grid:
        raise ValueError("`temperatures`, `top_ks` and `guidance_scales` must each hold at least one value.")
    for temperature, top_k, guidance_scale in grid:  # fail before hours of sampling
        try:
            _check_sampling(pipeline, {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                                       "guidance_scale": guidance_scale})  # fmt: skip
        except ValueError as error:
            raise ValueError(f"The sweep holds a setting the pipeline cannot sample: {error}") from None
    choice = choose_real_dataset(pipeline, dataset, image_column, label_column, data_dir)
    dataset = choice.source
    real, real_fingerprint, real_source = _real_split(pipeline, choice, real_split, state)
    _check_real_size(network, real, dataset, real_split, "real_split")
    real_features = cached_real_features(network, real, real_fingerprint, cache_dir=cache_dir,
                                         desc=f"{dataset} {real_split}", state=state, source=real_source)  # fmt: skip
    _check_spread(real_features, f"The features of {dataset} {real_split}", state)
    rows = []
    for temperature, top_k, guidance_scale in tqdm(grid, desc="Sweep", disable=not state.is_main_process):
        sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "guidance_scale": guidance_scale}
        features, _ = _sample_features(pipeline, network, num_samples, seed, batch_size, state, **sampling)
        if state.is_main_process:
            rows.append({**sampling, **sample_scores(real_features, features)})
    results = None
    if state.is_main_process:
        settings = {**_settings(pipeline, network, choice, real_split, num_samples, seed), "real_images": len(real),
                    "num_classes": pipeline.num_classes}  # fmt: skip
        results = {"rows": rows, "best": best_setting(rows), "settings": settings}
    return from_main_process(results, state)


def best_setting(rows: list[dict]) -> dict:
    """The row of the lowest FID."""
    return min(rows, key=lambda row: row["fid"])


__all__ = [
    "best_setting",
    "choose_real_dataset",
    "default_feature_network",
    "encode_images",
    "evaluate_pipeline",
    "memorisation",
    "memorisation_summary",
    "nearest_hamming_distances",
    "reconstruct",
    "sample_scores",
    "sweep_pipeline",
]
