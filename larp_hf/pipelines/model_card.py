"""The pipeline's model card (README.md), built from plain values: Hub metadata, sizes, sampling defaults, metrics and
evaluation results as model-index entries that the Hub and `ModelCard.load` read back."""

import contextlib
import fcntl
import json
import os
import re
import shlex
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..atomic_files import write_text_atomic
from .folder import PIPELINE_CONFIG_NAME, SAMPLE_GRID_NAME, update_pipeline_manifest, write_pipeline_index


MODEL_NAME = "LARP latent-autoregressive image model"
TASK_TYPE = "unconditional-image-generation"
# Hub dataset ids of the seed datasets, for the model card's metadata.
HUB_DATASETS = {
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
    "stl10": "tanganke/stl10",
    "faces": "Dmini/FFHQ-64x64",
}
MAX_LISTED_CLASSES = 100  # the card lists the first classes by name; more would drown it
SCORE_NAMES = {"fid": "FID", "precision": "precision", "recall": "recall", "density": "density", "coverage": "coverage"}
# Beside the card in a pipeline folder: the lock its writers take to merge their records (kept, so that a writer
# never locks a file another has just removed).
CARD_LOCK_NAME = ".larp_pipeline.lock"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def hub_dataset_id(dataset: str | None) -> str | None:
    """The Hub id of a dataset named by a recipe, or `None` for a local folder (or nothing): metadata names Hub ids only."""
    if not dataset:
        return None
    if dataset in HUB_DATASETS:
        return HUB_DATASETS[dataset]
    looks_local = dataset.startswith((".", "/", "~")) or ".." in dataset or Path(dataset).exists()
    return dataset if _HUB_ID.match(dataset) and not looks_local else None


def dataset_source(dataset) -> str | None:
    """
    The name of a recorded dataset as recipes and commands take it (a seed name, a folder or a Hub id): the value
    itself, or the `source` of a dataset provenance record (a dict), or `None` when nothing is recorded.
    """
    if isinstance(dataset, dict):
        dataset = dataset.get("source")
    return dataset or None


def same_dataset(first: str | None, second: str | None) -> bool:
    """Whether two recorded dataset names mean the same data: a seed name and its Hub id do, as do `a/` and `a`."""
    if not first or not second:
        return False

    def canonical(name: str) -> str:
        name = "fashion_mnist" if name == "fashion-mnist" else name
        return HUB_DATASETS.get(name, os.path.normpath(name))

    return canonical(first) == canonical(second)


def is_training_data(record: dict, training_dataset: str | None) -> bool | None:
    """Whether an evaluation record scored the data the model was trained on; `None` when no training data is recorded."""
    if training_dataset is None:
        return None
    return same_dataset(record["dataset"], training_dataset)


def evaluation_record(
    command: str, scores: dict, *, feature_network: str, feature_network_sha256: str, dataset: str, split: str,
    num_samples: int, sampling: dict,
) -> dict:  # fmt: skip
    """One evaluation of the pipeline's samples, as stored in the pipeline folder and shown on its card."""
    return {
        "command": command,
        "scores": {name: float(scores[name]) for name in SCORE_NAMES if name in scores},
        "feature_network": feature_network,
        "feature_network_sha256": feature_network_sha256,
        "dataset": dataset,
        "split": split,
        "num_samples": int(num_samples),
        "sampling": dict(sampling),
    }


def merge_evaluation(evaluations: list[dict], record: dict) -> list[dict]:
    """`evaluations` with `record` added; an earlier record of the same command, data, network and settings is replaced."""
    key = ("command", "feature_network_sha256", "dataset", "split", "num_samples", "sampling")
    kept = [old for old in evaluations if any(old.get(name) != record[name] for name in key)]
    return kept + [record]


def _sampling_text(sampling: dict) -> str:
    parts = [f"temperature {sampling.get('temperature')}", f"top-k {sampling.get('top_k') or 'off'}"]
    parts.append(f"top-p {sampling.get('top_p')}")
    if sampling.get("guidance_scale") not in (None, 1, 1.0):
        parts.append(f"guidance {sampling['guidance_scale']}")
    return ", ".join(parts)


def eval_results(evaluations: list[dict], training_dataset: str | None = None) -> list[EvalResult]:
    """
    The model-index entries of evaluation records, one per score. A record whose real images are not the training
    data (`training_dataset`, when recorded) says so in its dataset name and config, so that a score against other
    data is never read as one on the model's own dataset.
    """
    results = []
    for record in evaluations:
        dataset = record["dataset"]
        other_data = is_training_data(record, training_dataset) is False
        dataset_name = f"{dataset} (not the training data, {training_dataset})" if other_data else dataset
        config = f"{_sampling_text(record['sampling'])}; {record['num_samples']} samples; {record['command']}"
        if other_data:
            config += f"; real images from {dataset}, not the training data ({training_dataset})"
        for name, value in record["scores"].items():
            results.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    dataset_type=hub_dataset_id(dataset) or dataset,
                    dataset_name=dataset_name,
                    dataset_split=record["split"],
                    metric_type=name,
                    metric_name=f"{SCORE_NAMES[name]} ({record['feature_network']})",
                    metric_value=round(value, 4),
                    metric_config=config,
                )
            )
    return results


def evaluation_section(evaluations: list[dict], training_dataset: str | None = None) -> list[str]:
    """The card's "## Evaluation" section (lines, ending with a blank one) for evaluation records; none for none."""
    if not evaluations:
        return []
    lines = [
        "## Evaluation",
        "",
        "| # | command | real images | samples | sampling | feature network | FID | precision | recall | density | "
        "coverage |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    other_data = False
    for number, record in enumerate(evaluations, start=1):
        scores = [_format_metric(record["scores"][name]) if name in record["scores"] else "" for name in SCORE_NAMES]
        mark = " †" if is_training_data(record, training_dataset) is False else ""
        other_data = other_data or bool(mark)
        lines.append(
            f"| {number} | `{record['command']}` | {record['dataset']} {record['split']}{mark} | "
            f"{record['num_samples']:,} | {_sampling_text(record['sampling'])} | {record['feature_network']} "
            f"(`{record['feature_network_sha256'][:12]}…`) | " + " | ".join(scores) + " |"
        )
    lines += ["", "Scores on different feature networks or sample counts are not comparable with each other."]
    if other_data:
        lines[-1] += (
            f" † The real images are not the training data (`{training_dataset}`): such a score measures how close "
            "the samples come to that other dataset, not how well the model learned its own."
        )
    lines += [
        "",
        "`larp-hf card path/to/pipeline --list` lists these results (by #), `--remove #` or `--remove DATASET` "
        "removes some, `--remove-all` all of them.",
        "",
    ]
    return lines


def _classes_text(names: list[str] | None, num_classes: int) -> str:
    """The card's line on the classes: their names by index (the prior config's `id2label`), or that they have none."""
    if names is None:
        return f"Classes: indices 0…{num_classes - 1} (the prior's `id2label` names none)."
    listed = ", ".join(f"{index} `{name}`" for index, name in enumerate(names[:MAX_LISTED_CLASSES]))
    more = f" and {len(names) - MAX_LISTED_CLASSES:,} more" if len(names) > MAX_LISTED_CLASSES else ""
    return f"Classes (`prior/config.json`'s `id2label`): {listed}{more}."


def _format_metric(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _codebook_dim(tokenizer) -> int | None:
    """The codes' vector dimension where the tokenizer tells it (an adapter's `embed_dim`, a config's `codebook_dim`)."""
    config = getattr(tokenizer, "config", None)
    for value in (getattr(tokenizer, "embed_dim", None), getattr(config, "codebook_dim", None)):
        if isinstance(value, int):
            return value
    return None


def describe_tokenizer(tokenizer) -> dict:
    """
    An `ImageTokenizer` in plain values, read through the interface alone: `library` and `class` of the model (and the
    larp_hf `adapter` around it, if any), `parameters` (None for a tokenizer that is not an `nn.Module`), `grid` and
    `image_shape` as `[h, w]`, `channels`, `codebook_size`, `codebook_dim` (where known), `downsample_factor`,
    `value_range` and `tokenizer_hash`. A square tokenizer also gets `image_size` and `grid_size`, the sides, as ints
    (what pipelines described before non-square grids; read `grid` and `image_shape` in new code).
    """
    from .folder import part_record

    (height, width), (image_height, image_width) = tuple(tokenizer.grid), tuple(tokenizer.image_size)
    parameters = tokenizer.parameters() if callable(getattr(tokenizer, "parameters", None)) else None
    factors = (image_height // height, image_width // width)
    codebook_dim = _codebook_dim(tokenizer)
    square_image, square_grid = image_height == image_width, height == width
    return {
        **part_record(tokenizer),
        "parameters": None if parameters is None else sum(p.numel() for p in parameters),
        **({"image_size": image_height} if square_image else {}),
        "image_shape": [image_height, image_width],
        "channels": tokenizer.num_channels,
        "value_range": [float(value) for value in tokenizer.value_range],
        "codebook_size": tokenizer.codebook_size,
        **({"codebook_dim": codebook_dim} if codebook_dim is not None else {}),
        **({"grid_size": height} if square_grid else {}),
        "grid": [height, width],
        "downsample_factor": factors[0] if factors[0] == factors[1] else list(factors),
        "tokenizer_hash": tokenizer.tokenizer_hash(),
    }


def tokenizer_text(description: dict) -> str:
    """E.g. "a 24×24 grid of 16,384 codes from a transformers JanusVQVAE", from `describe_tokenizer`'s values."""
    height, width = description["grid"]
    article = "an" if str(height).startswith("8") or height in (11, 18) else "a"  # "an 8×8", "an 18×18"
    return (
        f"{article} {height}×{width} grid of {description['codebook_size']:,} codes from a {description['library']} "
        f"{description['class']}"
    )


def _tokenizer_loading_text(description: dict) -> str:
    """How the card says to load the tokenizer alone: through larp_hf, and with its own library where it has one."""
    text = 'The tokenizer loads alone with `larp_hf.load_tokenizer("path/or/repo_id", subfolder="vqvae")`'
    library, class_name = description["library"], description["class"]
    low, high = description["value_range"]
    if library in ("diffusers", "transformers"):
        return (
            f"{text}, or with {library} alone: `{class_name}.from_pretrained(\"path/or/repo_id\", "
            f"subfolder=\"vqvae\")` (pixel values in [{low:g}, {high:g}])."
        )
    if description.get("adapter") == "WrappedTokenizer":
        return text + ", given the module to load its weights into (`module=`)."
    return text + "."


def describe_pipeline(pipeline) -> dict:
    """A `LarpPipeline` in plain values: the parts and their sizes, the sampling defaults and the card's records."""
    prior_config = pipeline.prior.config
    return {
        "vqvae": describe_tokenizer(pipeline.vqvae),
        "prior": {
            "class": type(pipeline.prior).__name__,
            "architecture": prior_config.model_type,
            "parameters": sum(p.numel() for p in pipeline.prior.parameters()),
            "layers": prior_config.num_hidden_layers,
            "width": prior_config.hidden_size,
            "heads": prior_config.num_attention_heads,
            "positions": prior_config.max_position_embeddings,
            "vocab_size": prior_config.vocab_size,
            "num_classes": pipeline.num_classes,
            "class_names": pipeline.class_names,
            "preset": pipeline.larp.get("preset"),
        },
        "sampling_defaults": pipeline.sampling_defaults(),
        "dataset": pipeline.card_info.get("dataset"),
        "metrics": pipeline.card_info.get("metrics") or {},
        "evaluations": pipeline.card_info.get("evaluations") or [],
    }


def pipeline_model_card(description: dict, has_sample_grid: bool = False) -> ModelCard:
    """
    The model card of a pipeline described by `LarpPipeline.describe()` (plain values only): Hub metadata header
    (with model-index entries for every recorded evaluation), what the model is, sizes, sampling defaults, the
    training runs' metrics and the evaluation table.
    """
    vqvae, prior = description["vqvae"], description["prior"]
    dataset = description.get("dataset")
    metrics = description.get("metrics") or {}
    evaluations = description.get("evaluations") or []
    defaults = description["sampling_defaults"]
    conditional = prior["num_classes"] > 0
    dataset = dataset_source(dataset)
    hub_id = hub_dataset_id(dataset)
    architecture = prior.get("architecture", "gpt2")
    card_data = ModelCardData(
        model_name=MODEL_NAME if evaluations else None,
        library_name="larp_hf",
        license="apache-2.0",
        pipeline_tag=TASK_TYPE,
        tags=["larp_hf", "vq-vae", architecture, "image-generation", "latent-autoregressive"]
        + (["class-conditional"] if conditional else []),
        datasets=[hub_id] if hub_id else None,
        eval_results=eval_results(evaluations, dataset) or None,
    )
    (height, width), (image_height, image_width) = vqvae["grid"], vqvae["image_shape"]
    low, high = vqvae["value_range"]
    lines = [
        f"# {MODEL_NAME}",
        "",
        f"A `larp_hf` pipeline{f' trained on `{dataset}`' if dataset else ''}: a {prior['class']} prior samples "
        f"{tokenizer_text(vqvae)}{' given a class (classifier-free guidance available)' if conditional else ''}, "
        f"and the tokenizer decodes it to {image_height}×{image_width} images with {vqvae['channels']} channel(s).",
        "",
    ]
    if has_sample_grid:
        lines += ["![64 samples, seed 0, sampling defaults](samples.png)", ""]
    dimension = f" of dimension {vqvae['codebook_dim']}" if "codebook_dim" in vqvae else ""
    factor = vqvae["downsample_factor"]
    factor = f"{factor}×" if isinstance(factor, int) else f"{factor[0]}× × {factor[1]}×"
    parameters = "—" if vqvae["parameters"] is None else f"{vqvae['parameters']:,}"
    adapter = f", through larp_hf's `{vqvae['adapter']}`" if vqvae.get("adapter") else ""
    lines += [
        "| part | class | parameters | details |",
        "|---|---|---|---|",
        f"| `vqvae/` | `{vqvae['class']}` ({vqvae['library']}{adapter}) | {parameters} | {vqvae['codebook_size']:,} "
        f"codes{dimension}, {height}×{width} grid, downsampling {factor}, pixel values in [{low:g}, {high:g}] |",
        f"| `prior/` | `{prior['class']}` | {prior['parameters']:,} | {prior['layers']} layers, width "
        f"{prior['width']}, {prior['heads']} heads, {prior['positions']} positions, {prior['num_classes'] or 'no'} "
        "classes |",
        "",
        f"Sampling defaults (`prior/generation_config.json`, which stock `generate` reads too): temperature "
        f"{defaults['temperature']}, top-k {defaults['top_k'] or 'off'}, top-p {defaults['top_p']}."
        + (f" Classes in turn unless asked for, guided with scale {defaults.get('guidance_scale', 1.0)} (stored in "
           "`prior/config.json`'s `larp` entry, which stock `generate` does not read)." if prior["num_classes"] else ""),
        "",
    ]
    if conditional:
        lines += [
            "Stock `generate` must start from the prefix the prior was trained with, `[BOS, class token]` "
            "(`larp_hf.prior.prefix_ids`; by hand, `[bos_token_id, class_token_offset + class index]` from the `larp` "
            "entry of `prior/config.json`): from BOS alone, the first code lands in the class slot and every code "
            "after it is one place off.",
            "",
        ]
    names = prior.get("class_names")
    if conditional:
        lines += [_classes_text(names, prior["num_classes"]), ""]
    # The card's example asks for the first class by name where the classes have names.
    label = json.dumps(names[0]) if names else "0"
    cli_label = f" (`--class-label {shlex.quote(names[0]) if names else 0}` for one class)" if conditional else ""
    lines += [
        "## Use",
        "",
        "```python",
        "from larp_hf import LarpPipeline",
        "",
        'pipe = LarpPipeline.from_pretrained("path/or/repo_id")',
        "images = pipe(num_images=16, seed=0).images"
        if not conditional
        else f"images = pipe(num_images=16, class_labels={label}, guidance_scale=2.0, seed=0).images",
        "```",
        "",
        f"or `larp-hf generate path/or/repo_id --num-images 64 --seed 0 --output grid.png`{cli_label}. "
        + _tokenizer_loading_text(vqvae),
        "",
    ]
    if metrics:
        lines += ["## Training metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_format_metric(value)} |" for name, value in metrics.items()]
        lines += [""]
    lines += evaluation_section(evaluations, dataset)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines))


@contextlib.contextmanager
def card_lock(folder: Path):
    """Hold the exclusive lock of `folder`'s card (`CARD_LOCK_NAME`: an `flock`, dropped if the process dies)."""
    descriptor = os.open(folder / CARD_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # waits: another writer holds it for one read and two small writes
        yield
    finally:
        os.close(descriptor)


def merge_records_on_disk(pipeline, folder: str | os.PathLike):
    """
    Add the evaluation records that the pipeline folder `folder` holds now (another command may have written some
    since `pipeline` was loaded) to `pipeline.card_info` (`merge_evaluation`: the pipeline's own record of the same
    command and settings wins). Nothing to add where `folder` holds no pipeline. Call it under `card_lock(folder)`.
    """
    index_path = Path(folder) / PIPELINE_CONFIG_NAME
    if not index_path.is_file():
        return
    try:
        on_disk = (json.loads(index_path.read_text()).get("model_card") or {}).get("evaluations") or []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{index_path} cannot be read to merge the card's records into: {error}") from None
    merged = [record for record in on_disk if isinstance(record, dict)]
    for record in pipeline.card_info.get("evaluations") or []:
        merged = merge_evaluation(merged, record)
    pipeline.card_info["evaluations"] = merged


def write_model_card(pipeline, save_directory: str | os.PathLike):
    """
    Write `larp_pipeline.json` and `README.md` of `save_directory` from `pipeline.card_info`. Into a folder that
    holds a pipeline already, under its card lock (`card_lock`), the evaluation records the folder holds now are
    merged in first (`merge_evaluation`: the pipeline's own record of the same command and settings wins): two
    commands recording their scores at the same time both land, neither rewrites the card it loaded at its start.
    """
    save_directory = Path(save_directory)
    parts = {"vqvae": pipeline.vqvae, "prior": pipeline.prior, "image_processor": pipeline.image_processor}
    index_path = save_directory / PIPELINE_CONFIG_NAME
    with card_lock(save_directory) if index_path.is_file() else contextlib.nullcontext():
        merge_records_on_disk(pipeline, save_directory)
        write_pipeline_index(save_directory, type(pipeline).__name__, parts, pipeline.card_info)
        update_pipeline_manifest(save_directory, [PIPELINE_CONFIG_NAME])  # the card itself is not in the manifest
        card = pipeline.model_card(has_sample_grid=(save_directory / SAMPLE_GRID_NAME).is_file())
        write_text_atomic(save_directory / "README.md", str(card))


__all__ = [
    "CARD_LOCK_NAME",
    "HUB_DATASETS",
    "dataset_source",
    "card_lock",
    "describe_pipeline",
    "eval_results",
    "evaluation_section",
    "describe_tokenizer",
    "evaluation_record",
    "hub_dataset_id",
    "is_training_data",
    "merge_evaluation",
    "merge_records_on_disk",
    "pipeline_model_card",
    "same_dataset",
    "tokenizer_text",
    "write_model_card",
]


def card_info_from_training_runs(vqvae_dir, prior_dir, dataset: str | None = None) -> dict:
    """
    What the card says about training: the dataset and the final validation numbers that `train_vqvae.py` and
    `train_prior.py` wrote to their folders' `metrics.json` (missing files or keys are left out).
    """
    def read(folder) -> dict:
        path = Path(folder) / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    vqvae_metrics, prior_metrics = read(vqvae_dir), read(prior_dir)
    metrics = {}
    if "val_psnr" in vqvae_metrics:
        metrics["tokenizer reconstruction PSNR (dB, validation split)"] = round(vqvae_metrics["val_psnr"], 2)
    if "codebook_usage" in vqvae_metrics:
        metrics["tokenizer codebook usage (validation split)"] = round(vqvae_metrics["codebook_usage"], 4)
    if "val_loss" in prior_metrics:
        metrics["prior validation loss (nats/token)"] = round(prior_metrics["val_loss"], 4)
    for k in (1, 5, 10):
        if f"val_top{k}_accuracy" in prior_metrics:
            metrics[f"prior validation top-{k} accuracy"] = round(prior_metrics[f"val_top{k}_accuracy"], 4)
    return {"dataset": dataset or vqvae_metrics.get("dataset"), "metrics": metrics, "evaluations": []}


__all__ += ["card_info_from_training_runs"]
