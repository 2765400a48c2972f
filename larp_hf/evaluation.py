"""Judging a pipeline: sample metrics on a feature network, the tokenizer's floor, a real-vs-real baseline and a
memorisation check in code space. `larp-hf evaluate` and `larp-hf sweep` are thin shells over these functions."""

import hashlib
import json
import os
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from .data import load_image_dataset, pixels_dataset
from .metrics import density_coverage, frechet_distance, precision_recall
from .models import LarpImageProcessor
from .models.classifier import LarpClassifierModel


def default_cache_dir() -> Path:
    """Where real-image features are cached: `$LARP_HF_CACHE`, else `~/.cache/larp_hf`."""
    return Path(os.environ.get("LARP_HF_CACHE", Path.home() / ".cache" / "larp_hf"))


class FeatureNetwork:
    """
    A trained `LarpClassifierModel` used as the feature space of the metrics: images in [0, 1] -> (N, D) features.
    `name` says what the features are (scores are reported as e.g. "FID (fashion_mnist classifier features)") and
    `weights_sha256` names the exact network.
    """

    def __init__(self, model: LarpClassifierModel, name: str, image_processor: LarpImageProcessor | None = None):
        self.model = model.eval()
        self.name = name
        self.weights_sha256 = model.weights_sha256()
        config = model.config
        self.image_processor = image_processor or LarpImageProcessor(
            num_channels=config.in_channels, size={"height": config.image_size, "width": config.image_size}
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "FeatureNetwork":
        model = LarpClassifierModel.from_pretrained(path)
        metrics_path = Path(path) / "metrics.json"
        dataset = json.loads(metrics_path.read_text()).get("dataset") if metrics_path.is_file() else None
        has_processor = (Path(path) / "preprocessor_config.json").is_file()
        image_processor = LarpImageProcessor.from_pretrained(path) if has_processor else None
        return cls(model, f"{dataset or Path(path).name} classifier features", image_processor)

    @property
    def feature_dim(self) -> int:
        return self.model.config.feature_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        config = self.model.config
        return (config.in_channels, config.image_size, config.image_size)

    def check_images(self, channels: int, size: int, what: str):
        if (channels, size, size) != self.image_shape:
            raise ValueError(
                f"The feature network takes {self.image_shape[0]}×{self.image_shape[1]}×{self.image_shape[2]} images "
                f"but {what} are {channels}×{size}×{size}. Train a feature network at this size "
                f"(recipes/train_classifier.py --image_size {size} --in_channels {channels})."
            )

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 500, desc: str | None = None) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] (float) or [0, 255] (any integer type) -> (N, D) float64 features."""
        self.check_images(images.shape[1], images.shape[-1], "these images")
        device = self.model.device
        features = []
        for start in tqdm(range(0, len(images), batch_size), desc=desc or "Features", disable=desc is None):
            batch = images[start : start + batch_size]
            # Quantise like a saved PNG, then normalise as the network was trained (its image processor).
            batch = _as_uint8(batch)
            pixel_values = to_pixel_values(self.image_processor, batch).to(device)
            features.append(self.model.get_image_features(pixel_values).double().cpu())
        return torch.cat(features)


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Integer images are 0-255 values (whatever the integer type); float images are [0, 1] and get quantised."""
    if images.is_floating_point():
        return (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images.clamp(0, 255).to(torch.uint8)


def to_pixel_values(image_processor: LarpImageProcessor, pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 images already at the model's size -> the model's normalised float inputs."""
    return image_processor(pixels, do_resize=False, return_tensors="pt")["pixel_values"]


class InceptionFeatureNetwork(FeatureNetwork):
    """
    The standard FID feature space: Inception-v3's 2048 pool3 features (the TF-compatible network and bilinear resize
    to 299×299 of torch-fidelity, the reference PyTorch port). Grey images are repeated to RGB. Needs
    `pip install torch-fidelity` and either the weights file `pt_inception-2015-12-05-6726825d.pth` (`weights_path`) or
    network access to download it.
    """

    WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"

    def __init__(self, weights_path: str | os.PathLike | None = None):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise ValueError(
                "Inception-v3 features need torch-fidelity (`pip install torch-fidelity`); or use a domain classifier "
                "from recipes/train_classifier.py, which works offline."
            ) from None
        if weights_path is not None and not Path(weights_path).is_file():
            raise ValueError(f"No Inception-v3 weights at {weights_path}; download {self.WEIGHTS_FILE} once and pass its path.")
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=None if weights_path is None else str(weights_path)
        )
        self.name = "Inception-v3 pool3 features"
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.weights_sha256 = digest.hexdigest()

    @property
    def feature_dim(self) -> int:
        return 2048

    def check_images(self, channels: int, size: int, what: str):
        if channels not in (1, 3):
            raise ValueError(f"Inception-v3 takes grey or RGB images, but {what} have {channels} channels.")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 100, desc: str | None = None) -> torch.Tensor:
        self.check_images(images.shape[1], images.shape[-1], "these images")
        device = next(self.model.parameters()).device
        features = []
        for start in tqdm(range(0, len(images), batch_size), desc=desc or "Features", disable=desc is None):
            batch = images[start : start + batch_size]
            batch = _as_uint8(batch)
            batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
            features.append(self.model(batch.to(device))[0].double().cpu())
        return torch.cat(features)


def load_feature_network(spec: str | os.PathLike) -> FeatureNetwork:
    """`inception` or `inception:WEIGHTS.pth` for Inception-v3, else a folder from train_classifier.py."""
    spec = str(spec)
    if spec == "inception" or spec.startswith("inception:"):
        return InceptionFeatureNetwork(spec.partition(":")[2] or None)
    if not (Path(spec) / "config.json").is_file():
        raise ValueError(
            f"No feature network in {spec}. Train one with `accelerate launch recipes/train_classifier.py "
            "--output_dir DIR` (Fashion-MNIST: minutes on a CPU), or pass `inception[:WEIGHTS.pth]`."
        )
    return FeatureNetwork.from_pretrained(spec)


def real_images(dataset: str, split: str, image_size: int, channels: int, data_dir=None) -> tuple[torch.Tensor, str]:
    """(N, C, H, W) uint8 images of a dataset split at the given size (cached by `datasets`), and its fingerprint."""
    processor = LarpImageProcessor(num_channels=channels, size={"height": image_size, "width": image_size})
    pixels = pixels_dataset(load_image_dataset(dataset, split=split, data_dir=data_dir), processor)
    # with_format("torch") gives int64 for the uint8 column: keep the 0-255 values in uint8.
    return pixels.with_format("torch")[:]["pixels"].to(torch.uint8), pixels._fingerprint


def cached_real_features(
    network: FeatureNetwork, images: torch.Tensor, fingerprint: str, cache_dir: Path | None = None, desc: str = ""
) -> torch.Tensor:
    """Features of a real image set, computed once per (dataset fingerprint, feature network) and kept on disk."""
    cache_dir = Path(cache_dir or default_cache_dir()) / "features"
    path = cache_dir / f"{fingerprint}-{network.weights_sha256[:16]}.pt"
    if path.is_file():
        return torch.load(path)
    features = network(images, desc=f"Features of {desc or 'real images'}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(features, temporary)
    os.replace(temporary, path)
    return features


def sample_scores(real_features: torch.Tensor, generated_features: torch.Tensor, k: int = 3) -> dict:
    """FID, precision, recall (k), density and coverage (k=5) of one generated feature set against a real one."""
    return {
        "fid": frechet_distance(real_features, generated_features),
        **precision_recall(real_features, generated_features, k=k),
        **density_coverage(real_features, generated_features, k=5),
    }


def memorisation(generated_codes: torch.Tensor, training_codes: torch.Tensor, chunk_size: int = 32) -> dict:
    """
    How close generated code grids come to training grids: the fraction identical to one, and the distribution of the
    Hamming distance (number of differing codes out of h·w) to the nearest training grid.
    """
    generated = generated_codes.flatten(1).to(torch.int16)
    training = training_codes.flatten(1).to(torch.int16)
    if generated.shape[1] != training.shape[1]:
        raise ValueError(f"Generated grids have {generated.shape[1]} codes but training grids {training.shape[1]}.")
    nearest = torch.empty(len(generated), dtype=torch.long)
    for start in tqdm(range(0, len(generated), chunk_size), desc="Nearest training grids"):
        differing = (generated[start : start + chunk_size, None, :] != training[None]).sum(-1)  # (chunk, N)
        nearest[start : start + chunk_size] = differing.min(dim=1).values
    quantiles = torch.quantile(nearest.double(), torch.tensor([0.0, 0.05, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    return {
        "exact_copies": float((nearest == 0).double().mean()),
        "hamming_to_nearest_mean": float(nearest.double().mean()),
        "hamming_to_nearest_quantiles": dict(zip(["min", "p5", "p25", "median", "p75", "max"], quantiles.tolist())),
        "hamming_to_nearest_histogram": torch.bincount(nearest, minlength=generated.shape[1] + 1).tolist(),
        "codes_per_grid": generated.shape[1],
    }


def training_code_grids(token_dataset: str | os.PathLike, split: str = "train") -> torch.Tensor:
    """
    (N, h·w) code grids of a token dataset split (as written by encode_dataset.py), with the grids of the mirrored
    images when the dataset has them: the prior trained on both.
    """
    tokens = datasets.load_from_disk(str(token_dataset))
    if isinstance(tokens, datasets.DatasetDict):
        tokens = tokens[split]
    columns = [c for c in ("input_ids", "input_ids_flipped") if c in tokens.column_names]
    table = tokens.with_format("torch", columns=columns)[:]
    return torch.cat([table[column].long() for column in columns])


__all__ = [
    "FeatureNetwork",
    "InceptionFeatureNetwork",
    "load_feature_network",
    "cached_real_features",
    "default_cache_dir",
    "memorisation",
    "real_images",
    "sample_scores",
    "training_code_grids",
]


# ------------------------------------------------------------------------------------------ the two commands' work


def _generated_features(pipeline, network: FeatureNetwork, num_samples: int, seed: int, batch_size: int, **sampling):
    output = pipeline(num_images=num_samples, batch_size=batch_size, seed=seed, output_type="pt", **sampling)
    return network(output.images, desc="Features of samples"), output.codes


@torch.no_grad()
def reconstruct(pipeline, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, C, H, W) uint8 real images -> the tokenizer's reconstructions, (N, C, H, W) in [0, 1]."""
    vqvae, outputs = pipeline.vqvae, []
    for start in tqdm(range(0, len(images), batch_size), desc="Tokenizer reconstructions"):
        pixel_values = to_pixel_values(pipeline.image_processor, images[start : start + batch_size]).to(vqvae.device)
        outputs.append(pipeline.image_processor.postprocess(vqvae.decode(vqvae.encode(pixel_values)), output_type="pt"))
    return torch.cat(outputs)


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
    **sampling,
) -> dict:
    """
    Everything `larp-hf evaluate` reports: sample scores; the same scores for the tokenizer's reconstructions of the
    real set (the floor a prior cannot beat) and for `num_samples` real images of `baseline_split` (what real data
    scores at this n); the memorisation check against the training code grids.
    """
    channels, size = pipeline.vqvae.config.in_channels, pipeline.vqvae.config.image_size
    network.check_images(channels, size, "the pipeline's images")
    images, fingerprint = real_images(dataset, real_split, size, channels, data_dir)
    if num_samples < 2 or num_samples <= network.feature_dim:
        raise ValueError(
            f"--num-samples {num_samples} is too few for {network.feature_dim}-dimensional features: FID "
            f"needs more samples than dimensions (at least {network.feature_dim + 1}; thousands for "
            "stable numbers)."
        )
    real_features = cached_real_features(network, images, fingerprint, cache_dir, desc=f"{dataset} {real_split}")

    generated_features, codes = _generated_features(pipeline, network, num_samples, seed, batch_size, **sampling)
    results = {"samples": sample_scores(real_features, generated_features)}

    floor_images = images[: min(num_samples, len(images))]
    results["reconstructions"] = sample_scores(real_features, network(reconstruct(pipeline, floor_images)))

    baseline_images, baseline_fingerprint = real_images(dataset, baseline_split, size, channels, data_dir)
    chosen = torch.randperm(len(baseline_images), generator=torch.Generator().manual_seed(seed))[:num_samples]
    baseline_features = cached_real_features(
        network, baseline_images, baseline_fingerprint, cache_dir, desc=f"{dataset} {baseline_split}"
    )
    results["real_baseline"] = sample_scores(real_features, baseline_features[chosen])

    if token_dataset is not None:
        training_codes = training_code_grids(token_dataset, baseline_split)
    else:
        vqvae = pipeline.vqvae
        training_codes = torch.cat([
            vqvae.encode(to_pixel_values(pipeline.image_processor, chunk).to(vqvae.device)).flatten(1).cpu()
            for chunk in tqdm(baseline_images.split(500), desc="Encoding training grids")
        ])
    results["memorisation"] = memorisation(codes, training_codes)
    results["settings"] = {
        "num_samples": num_samples,
        "seed": seed,
        "sampling": {**pipeline.sampling_defaults(), **{k: v for k, v in sampling.items() if v is not None}},
        "dataset": dataset,
        "real_split": real_split,
        "real_images": len(images),
        "reconstructed_images": len(floor_images),
        "baseline_split": baseline_split,
        "feature_network": network.name,
        "feature_network_sha256": network.weights_sha256,
    }
    return results


def evaluation_markdown(results: dict) -> str:
    settings = results["settings"]
    sampling = settings["sampling"]
    name = settings["feature_network"]
    n = settings["num_samples"]
    rows = [
        (f"samples (temperature {sampling['temperature']}, top-k {sampling['top_k'] or 'off'}, top-p "
         f"{sampling['top_p']}), n = {n}", results["samples"]),
        (f"tokenizer reconstructions of {settings['real_split']} (the floor), n = {settings['reconstructed_images']}",
         results["reconstructions"]),
        (f"real {settings['baseline_split']} images (baseline), n = {n}", results["real_baseline"]),
    ]  # fmt: skip
    lines = [
        f"Against {settings['real_images']:,} real `{settings['dataset']}` {settings['real_split']} images; features: "
        f"{name} (weights SHA-256 `{settings['feature_network_sha256'][:16]}…`).",
        "",
        f"| | FID ({name}) | precision | recall | density | coverage |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, scores in rows:
        lines.append(
            f"| {label} | {scores['fid']:.3f} | {scores['precision']:.3f} | {scores['recall']:.3f} | "
            f"{scores['density']:.3f} | {scores['coverage']:.3f} |"
        )
    memo = results["memorisation"]
    q = memo["hamming_to_nearest_quantiles"]
    lines += [
        "",
        f"Memorisation (code space, {memo['codes_per_grid']} codes per grid): {memo['exact_copies']:.2%} of the samples "
        f"are identical to a training grid; Hamming distance to the nearest training grid: mean "
        f"{memo['hamming_to_nearest_mean']:.1f}, min {q['min']:.0f}, 5% {q['p5']:.0f}, median {q['median']:.0f}, "
        f"max {q['max']:.0f}.",
    ]
    return "\n".join(lines) + "\n"


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
) -> list[dict]:
    """Sample scores for every (temperature, top-k) pair, the same seed for each; top-k 0 = off."""
    channels, size = pipeline.vqvae.config.in_channels, pipeline.vqvae.config.image_size
    network.check_images(channels, size, "the pipeline's images")
    if num_samples <= network.feature_dim:
        raise ValueError(
            f"--num-samples {num_samples} is too few for {network.feature_dim}-dimensional features "
            f"(FID needs at least {network.feature_dim + 1})."
        )
    for top_k in top_ks:  # fail before hours of sampling
        if top_k < 0 or top_k > pipeline.codebook_size:
            raise ValueError(f"top-k {top_k} is outside [0, {pipeline.codebook_size}] (0 = off).")
    images, fingerprint = real_images(dataset, real_split, size, channels, data_dir)
    real_features = cached_real_features(network, images, fingerprint, cache_dir, desc=f"{dataset} {real_split}")
    rows = []
    settings = [(t, k) for k in top_ks for t in temperatures]
    for temperature, top_k in tqdm(settings, desc="Sweep"):
        features, _ = _generated_features(
            pipeline, network, num_samples, seed, batch_size, temperature=temperature, top_k=top_k
        )
        rows.append({"temperature": temperature, "top_k": top_k, **sample_scores(real_features, features)})
    return rows


def best_setting(rows: list[dict]) -> dict:
    return min(rows, key=lambda row: row["fid"])


def sweep_markdown(rows: list[dict], feature_name: str, num_samples: int) -> str:
    best = best_setting(rows)
    lines = [
        f"| temperature | top-k | FID ({feature_name}) | precision | recall | density | coverage |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        bold = "**" if row is best else ""
        lines.append(
            f"| {row['temperature']} | {row['top_k'] or 'off'} | {bold}{row['fid']:.3f}{bold} | {row['precision']:.3f} "
            f"| {row['recall']:.3f} | {row['density']:.3f} | {row['coverage']:.3f} |"
        )
    lines += ["", f"{num_samples} samples per setting. Best by FID: temperature {best['temperature']}, top-k "
              f"{best['top_k'] or 'off'} (FID {best['fid']:.3f})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def sweep_plots(rows: list[dict], feature_name: str, output_dir: Path) -> list[Path]:
    """sweep_fid.png (FID against temperature, one line per top-k) and sweep_precision_recall.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top_ks = sorted({row["top_k"] for row in rows})
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for top_k in top_ks:
        series = sorted((row for row in rows if row["top_k"] == top_k), key=lambda row: row["temperature"])
        label = f"top-k {top_k or 'off'}"
        axes[0].plot([r["temperature"] for r in series], [r["fid"] for r in series], marker="o", label=label)
        axes[1].plot([r["recall"] for r in series], [r["precision"] for r in series], marker="o", label=label)
        for row in series:
            axes[1].annotate(f"T={row['temperature']}", (row["recall"], row["precision"]), fontsize=7,
                             textcoords="offset points", xytext=(3, 3))  # fmt: skip
    axes[0].set(xlabel="temperature", ylabel=f"FID ({feature_name})", title="FID (lower is better)")
    axes[1].set(xlabel="recall (diversity)", ylabel="precision (quality)", title="precision against recall")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path = output_dir / "sweep.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path]


__all__ += ["best_setting", "evaluate_pipeline", "evaluation_markdown", "reconstruct", "sweep_markdown", "sweep_plots", "sweep_pipeline"]
