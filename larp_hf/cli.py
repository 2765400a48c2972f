"""The `larp-hf` console script: build a pipeline from trained parts, sample from it, describe it."""

import argparse
import json
import sys
import time
from pathlib import Path


def _int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or comma-separated integers, got {text!r}") from None


def _refuse_non_empty(path: Path, overwrite: bool, what: str):
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise SystemExit(f"error: {path} already exists and is not empty; pick another {what} or pass --overwrite.")


def _load_pipeline(args):
    from larp_hf import LarpPipeline

    try:
        return LarpPipeline.from_pretrained(args.model, revision=args.revision)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------------- assemble


def _read_metrics(folder: Path) -> dict:
    path = folder / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def assemble(args):
    from transformers import AutoModelForCausalLM

    from larp_hf import LarpImageProcessor, LarpPipeline, LarpVQVAEModel, set_sampling_defaults
    from larp_hf.pipelines import is_pipeline_folder

    output = Path(args.output)
    if output.is_dir() and any(output.iterdir()) and not is_pipeline_folder(output) and not args.overwrite:
        raise SystemExit(
            f"error: {output} is not empty and holds no pipeline; pick another --output or pass --overwrite."
        )
    vqvae = LarpVQVAEModel.from_pretrained(args.vqvae)
    prior = AutoModelForCausalLM.from_pretrained(args.prior)
    image_processor = LarpImageProcessor.from_pretrained(args.vqvae) if (Path(args.vqvae) / "preprocessor_config.json").is_file() else None
    try:
        pipeline = LarpPipeline(vqvae, prior, image_processor)
    except ValueError as error:
        raise SystemExit(f"error: --prior {args.prior} and --vqvae {args.vqvae}: {error}") from None
    defaults = pipeline.sampling_defaults()
    set_sampling_defaults(
        prior,
        temperature=defaults["temperature"] if args.temperature is None else args.temperature,
        top_k=defaults["top_k"] if args.top_k is None else args.top_k,
        top_p=defaults["top_p"] if args.top_p is None else args.top_p,
    )

    # The model card reports the training runs' final validation numbers when the recipes' metrics.json are there.
    vqvae_metrics, prior_metrics = _read_metrics(Path(args.vqvae)), _read_metrics(Path(args.prior))
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
    pipeline.card_info = {"dataset": args.dataset or vqvae_metrics.get("dataset"), "metrics": metrics}

    start = time.perf_counter()
    pipeline.save_pretrained(output, sample_grid=not args.no_sample_grid)
    print(f"Wrote the pipeline to {output} ({time.perf_counter() - start:.1f} s)")
    if not args.no_sample_grid:
        print(f"Samples (seed 0, sampling defaults): {output / 'samples.png'}")


# ---------------------------------------------------------------------------------------------------------- generate


def generate(args):
    import datasets
    import torch

    from larp_hf.pipelines import image_grid

    output = Path(args.output) if args.output else None
    if output is None and not args.image_dir and not args.dataset_dir:
        output = Path("samples.png")
    if output is not None and output.suffix.lower() != ".png":
        raise SystemExit(f"error: --output names the grid image and must end in .png, got {output}.")
    for folder, flag in ((args.image_dir, "--image-dir"), (args.dataset_dir, "--dataset-dir")):
        if folder:
            _refuse_non_empty(Path(folder), args.overwrite, flag)

    pipeline = _load_pipeline(args).to(args.device or _default_device())
    class_labels = None
    if args.class_label is not None:
        class_labels = args.class_label[0] if len(args.class_label) == 1 else args.class_label
    start = time.perf_counter()
    try:
        result = pipeline(
            num_images=args.num_images,
            batch_size=args.batch_size,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            class_labels=class_labels,
            guidance_scale=args.guidance_scale,
            seed=args.seed,
            output_type="pt",
        )
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    seconds = time.perf_counter() - start
    print(f"Sampled {args.num_images} images in {seconds:.1f} s ({args.num_images / seconds:.1f} images/s)")

    pil_images = _to_pil(result.images)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        image_grid(result.images, nrow=args.nrow).save(output)
        print(f"Grid: {output}")
    if args.image_dir:
        folder = Path(args.image_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(pil_images):
            image.save(folder / f"{index:05d}.png")
        print(f"{len(pil_images)} PNG files: {folder}")
    if args.dataset_dir:
        columns = {"image": pil_images, "codes": result.codes.flatten(1).tolist()}
        features = {"image": datasets.Image(), "codes": datasets.Sequence(datasets.Value("int32"))}
        if class_labels is not None:
            columns["label"] = torch.as_tensor(class_labels).expand(args.num_images).tolist()
            features["label"] = datasets.Value("int64")
        dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        dataset.save_to_disk(args.dataset_dir)
        print(f"Image dataset ({len(dataset)} rows, columns {dataset.column_names}): {args.dataset_dir}")


def _to_pil(images):
    """(N, C, H, W) in [0, 1] -> PIL images (mode L or RGB)."""
    import PIL.Image

    arrays = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return [PIL.Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array) for array in arrays]


# -------------------------------------------------------------------------------------------------------------- info


def info(args):
    pipeline = _load_pipeline(args)
    vqvae, prior = pipeline.vqvae, pipeline.prior
    description = {
        "model": str(args.model),
        "vqvae": {
            "class": type(vqvae).__name__,
            "parameters": sum(p.numel() for p in vqvae.parameters()),
            "image_size": vqvae.config.image_size,
            "channels": vqvae.config.in_channels,
            "codebook_size": pipeline.codebook_size,
            "codebook_dim": vqvae.config.codebook_dim,
            "grid": f"{pipeline.grid_size}x{pipeline.grid_size}",
            "tokenizer_hash": vqvae.tokenizer_hash(),
        },
        "prior": {
            "class": type(prior).__name__,
            "parameters": sum(p.numel() for p in prior.parameters()),
            "layers": prior.config.n_layer,
            "width": prior.config.n_embd,
            "heads": prior.config.n_head,
            "vocab_size": prior.config.vocab_size,
            "num_classes": pipeline.num_classes,
            "preset": pipeline.larp.get("preset"),
        },
        "sampling_defaults": pipeline.sampling_defaults(),
        "dataset": pipeline.card_info.get("dataset"),
        "metrics": pipeline.card_info.get("metrics") or {},
    }
    if args.json:
        print(json.dumps(description, indent=2))
        return
    print(f"LarpPipeline {args.model}")
    for part in ("vqvae", "prior"):
        print(f"  {part}:")
        for key, value in description[part].items():
            print(f"    {key:<15} {value:,}" if isinstance(value, int) else f"    {key:<15} {value}")
    print("  sampling defaults: " + ", ".join(f"{k}={v}" for k, v in description["sampling_defaults"].items()))
    print(f"  dataset: {description['dataset'] or 'unknown'}")
    for name, value in description["metrics"].items():
        print(f"  {name}: {value}")


# ------------------------------------------------------------------------------------------------ evaluate and sweep


def _float_list(text: str) -> list[float]:
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _pipeline_and_feature_network(args):
    """The pipeline on --device and the feature network beside it."""
    from larp_hf.evaluation import load_feature_network

    pipeline = _load_pipeline(args).to(args.device or _default_device())
    try:
        network = load_feature_network(args.feature_network)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    network.to(pipeline.device)
    return pipeline, network


def evaluate(args):
    from larp_hf.evaluation import evaluate_pipeline, evaluation_markdown, write_evaluation_reports

    output_dir = Path(args.output_dir)
    pipeline, network = _pipeline_and_feature_network(args)
    start = time.perf_counter()
    try:
        results = evaluate_pipeline(
            pipeline, network, dataset=args.dataset, real_split=args.real_split, baseline_split=args.baseline_split,
            num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size, token_dataset=args.token_dataset,
            data_dir=args.dataset_dir, cache_dir=args.cache_dir,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    results["settings"]["model"] = str(args.model)
    results["settings"]["seconds"] = round(time.perf_counter() - start, 1)
    write_evaluation_reports(results, output_dir)
    print(evaluation_markdown(results))
    print(f"Wrote {output_dir / 'evaluation.json'} and {output_dir / 'evaluation.md'} ({results['settings']['seconds']} s)")


def sweep(args):
    from larp_hf import set_sampling_defaults
    from larp_hf.evaluation import sweep_markdown, sweep_pipeline, write_sweep_reports
    from larp_hf.pipelines import is_pipeline_folder

    output_dir = Path(args.output_dir)
    pipeline, network = _pipeline_and_feature_network(args)
    pipeline.set_progress_bar_config(disable=True)
    if args.write_generation_config and not is_pipeline_folder(args.model):
        raise SystemExit("error: --write-generation-config needs MODEL to be a local pipeline folder.")
    start = time.perf_counter()
    try:
        results = sweep_pipeline(
            pipeline, network, args.temperature, args.top_k, dataset=args.dataset, real_split=args.real_split,
            num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size, data_dir=args.dataset_dir,
            cache_dir=args.cache_dir,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    write_sweep_reports(results, output_dir)
    print(sweep_markdown(results))
    print(f"Wrote sweep.json, sweep.csv, sweep.md and sweep.png to {output_dir} ({time.perf_counter() - start:.0f} s)")
    best = results["best"]
    if args.write_generation_config:
        set_sampling_defaults(pipeline.prior, temperature=best["temperature"], top_k=best["top_k"])
        pipeline.prior.generation_config.save_pretrained(Path(args.model) / "prior")
        pipeline.model_card(has_sample_grid=(Path(args.model) / "samples.png").is_file()).save(Path(args.model) / "README.md")
        print(f"Sampling defaults of {args.model} are now temperature {best['temperature']}, top-k {best['top_k'] or 'off'}.")


# -------------------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="larp-hf", description="Latent-autoregressive image generation: build, sample and describe pipelines."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "assemble",
        help="put a trained tokenizer and prior into one pipeline folder (with model card and sample grid)",
        description="Write a LarpPipeline folder from a tokenizer (train_vqvae.py output) and a prior "
        "(train_prior.py output): vqvae/, prior/, image_processor/, model_index.json, README.md, samples.png.",
    )
    p.add_argument("--vqvae", required=True, help="tokenizer folder (save_pretrained format)")
    p.add_argument("--prior", required=True, help="prior folder (save_pretrained format)")
    p.add_argument("--output", required=True, help="pipeline folder to write")
    p.add_argument("--dataset", help="training dataset named in the model card (default: from the tokenizer's metrics.json)")
    p.add_argument("--temperature", type=float, help="sampling default stored in prior/generation_config.json")
    p.add_argument("--top-k", type=int, help="sampling default (0 = off)")
    p.add_argument("--top-p", type=float, help="sampling default (1.0 = off)")
    p.add_argument("--no-sample-grid", action="store_true", help="skip sampling the model card's 8x8 grid")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder that holds no pipeline")
    p.set_defaults(func=assemble)

    p = commands.add_parser(
        "generate",
        help="sample images from a pipeline (folder or Hub repo id)",
        description="Sample images and write a grid PNG, one PNG per image (--image-dir) and/or a datasets image "
        "dataset with the sampled codes (--dataset-dir).",
    )
    p.add_argument("model", help="pipeline folder or Hub repo id")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    p.add_argument("--num-images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--temperature", type=float, help="default: the pipeline's sampling default")
    p.add_argument("--top-k", type=int, help="0 = off; default: the pipeline's sampling default")
    p.add_argument("--top-p", type=float, help="default: the pipeline's sampling default")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same images (default 0)")
    p.add_argument(
        "--class-label", type=_int_list, help="class-conditional priors: one class for all images, or one per image (0,1,2,...)"
    )
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (>= 1; 1 = none)")
    p.add_argument("--output", help="grid PNG (default samples.png unless --image-dir or --dataset-dir is given)")
    p.add_argument("--nrow", type=int, help="images per grid row (default: a square grid)")
    p.add_argument("--image-dir", help="also write one PNG per image to this folder")
    p.add_argument("--dataset-dir", help="also save a datasets image dataset (image, codes[, label]) to this folder")
    p.add_argument("--overwrite", action="store_true", help="write into non-empty --image-dir/--dataset-dir folders")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=generate)

    p = commands.add_parser(
        "info", help="describe a pipeline: parts, sizes, grid, codebook, sampling defaults", description="Describe a pipeline."
    )
    p.add_argument("model", help="pipeline folder or Hub repo id")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=info)

    def add_evaluation_arguments(p, num_samples):
        p.add_argument("model", help="pipeline folder or Hub repo id")
        p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
        p.add_argument(
            "--feature-network", default="outputs/features-fashion-mnist",
            help="folder of a classifier from recipes/train_classifier.py (default: %(default)s), or "
            "'inception[:WEIGHTS.pth]' for Inception-v3 (needs torch-fidelity)",
        )  # fmt: skip
        p.add_argument("--dataset", default="fashion_mnist", help="real images: 'fashion_mnist', a folder or a Hub id")
        p.add_argument("--dataset-dir", help="folder of the Fashion-MNIST IDX files")
        p.add_argument("--real-split", default="test", help="the real set the samples are compared with")
        p.add_argument("--num-samples", type=int, default=num_samples)
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--output-dir", required=True, help="where the tables (and plots) go")
        p.add_argument("--cache-dir", help="real-image feature cache (default $LARP_HF_CACHE or ~/.cache/larp_hf)")
        p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")

    p = commands.add_parser(
        "evaluate",
        help="FID, precision, recall, density, coverage of samples; the tokenizer's floor; a real baseline; memorisation",
        description="Sample NUM_SAMPLES images and score them against the real split on a feature network; score the "
        "tokenizer's reconstructions and NUM_SAMPLES real images of the baseline split the same way; measure how close "
        "samples come to training code grids. Writes evaluation.json and evaluation.md.",
    )
    add_evaluation_arguments(p, num_samples=10000)
    p.add_argument("--baseline-split", default="train", help="real images scored as a baseline; also the training grids")
    p.add_argument("--token-dataset", help="token dataset of the training split (default: encode it with the tokenizer)")
    p.add_argument("--temperature", type=float, help="default: the pipeline's sampling default")
    p.add_argument("--top-k", type=int, help="0 = off; default: the pipeline's sampling default")
    p.add_argument("--top-p", type=float, help="default: the pipeline's sampling default")
    p.set_defaults(func=evaluate)

    p = commands.add_parser(
        "sweep",
        help="score a grid of temperatures and top-k values; name (and optionally store) the best by FID",
        description="Sample NUM_SAMPLES images at every temperature/top-k pair (same seed) and score them. Writes "
        "sweep.csv, sweep.md and sweep.png (FID against temperature per top-k; precision against recall).",
    )
    add_evaluation_arguments(p, num_samples=2000)
    p.add_argument("--temperature", type=_float_list, default=[0.7, 0.8, 0.9, 1.0], help="comma-separated")
    p.add_argument("--top-k", type=_int_list, default=[0, 50, 100, 200], help="comma-separated, 0 = off")
    p.add_argument(
        "--write-generation-config", action="store_true",
        help="store the best setting as the pipeline's sampling default (prior/generation_config.json, model card)",
    )  # fmt: skip
    p.set_defaults(func=sweep)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
