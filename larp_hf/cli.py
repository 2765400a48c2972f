"""The `larp-hf` console script: parses arguments, calls `larp_hf`, writes what it returns."""

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

from larp_hf import errors
from larp_hf.flags import ArgumentParser, list_of


# Library arguments whose flag is not `--` + the argument's name with dashes (used to translate error messages).
FLAGS_OF_ARGUMENTS = {"class_labels": "--class-label", "data_dir": "--dataset-dir", "temperatures": "--temperature",
                      "top_ks": "--top-k", "guidance_scales": "--guidance-scale", "grid_path": "--output",
                      "pretrained_model_name_or_path": "MODEL", "results": "--remove"}  # fmt: skip


def _class_labels(text: str) -> list[str]:
    """An argparse type: comma-separated class names or indices; the pipeline reads each (names first)."""
    labels = [item.strip() for item in text.split(",") if item.strip()]
    if not labels:
        raise argparse.ArgumentTypeError(f"expected one or comma-separated class names or indices, got {text!r}")
    return labels


def _count(minimum: int):
    """An argparse type: an integer of at least `minimum`, refused by argparse (exit 2) before any work: a zero
    batch size or image count used to divide by zero after the model was loaded."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
        return value

    parse.__name__ = "positive integer" if minimum == 1 else f"integer >= {minimum}"
    return parse


# The library's opt-outs as the flags that give them.
FLAGS_OF_OPT_OUTS = {"`verify=False`": "`--no-verify`", "`allow_unverified_pair=True`": "`--allow-unpaired-tokenizer`"}


def _with_opt_out_flags(error: ValueError) -> ValueError:
    message = str(error)
    for argument, flag in FLAGS_OF_OPT_OUTS.items():
        message = message.replace(argument, flag)
    return ValueError(message)


def _load_pipeline(args):
    """MODEL at --revision, verified unless --no-verify; for the commands that sample, in --dtype on --device
    (default: cuda when available)."""
    import torch

    from larp_hf import LarpPipeline

    errors.check_model_reference(args.model, name="MODEL")
    options = {"revision": args.revision, "verify": args.verify, "allow_unverified_pair": args.allow_unpaired_tokenizer}
    if "device" in args:
        options.update(dtype=args.dtype, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        return LarpPipeline.from_pretrained(args.model, **options)
    except ValueError as error:
        raise _with_opt_out_flags(error) from None


def _saved_image_processor(folder):
    """The `LarpImageProcessor` saved in a tokenizer folder (train_vqvae.py writes one), or None: a library's folder
    has none, or another library's processor, which makes other tensors."""
    from larp_hf import LarpImageProcessor

    config = Path(folder) / "preprocessor_config.json"
    if not config.is_file() or json.loads(config.read_text()).get("image_processor_type") != "LarpImageProcessor":
        return None
    return LarpImageProcessor.from_pretrained(folder)


def assemble(args):
    from transformers import AutoModelForCausalLM

    from larp_hf import LarpPipeline, check_pair, load_tokenizer, set_sampling_defaults
    from larp_hf.output_folders import folder_entries, names_list, output_overlap
    from larp_hf.data import DatasetRecord
    from larp_hf.pipelines import card_info_from_training_runs, is_pipeline_folder
    from larp_hf.pipelines.folder import check_no_remote_code

    errors.check_model_reference(args.vqvae, name="vqvae")
    errors.check_model_reference(args.prior, name="prior")
    output = Path(args.output)
    inputs = {"--vqvae": args.vqvae, "--prior": args.prior, "--dataset": args.dataset}
    refusal = output_overlap(output, inputs, "--output")
    if refusal:
        raise ValueError(refusal)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; pick another --output (a folder).")
    if folder_entries(output) and not is_pipeline_folder(output):
        # A tokenizer's training folder, a user's notes: nothing assemble wrote, so nothing it may replace.
        raise ValueError(
            f"--output {output} is not empty and holds no pipeline ({names_list(folder_entries(output))}); assemble "
            "writes a new folder or replaces a pipeline, never a folder of other files. Pick another --output."
        )
    if folder_entries(output) and not args.overwrite:
        raise ValueError(
            f"{output} holds a pipeline; pick another --output or pass --overwrite to replace it (files that no "
            "pipeline save wrote there are kept)."
        )
    errors.check_output_path(output, name="output", folder=True)
    vqvae = load_tokenizer(args.vqvae)  # any tokenizer folder: larp_hf's, a diffusers/transformers one, a converted one
    check_no_remote_code(Path(args.prior))
    prior = AutoModelForCausalLM.from_pretrained(args.prior, trust_remote_code=False)  # a folder never brings code
    try:
        check_pair(
            vqvae, prior, prior_name=f"prior in {args.prior}", vqvae_name=f"tokenizer in {args.vqvae}",
            allow_unverified_pair=args.allow_unpaired_tokenizer,
        )  # fmt: skip
    except ValueError as error:
        raise _with_opt_out_flags(error) from None
    pipeline = LarpPipeline(
        vqvae, prior, _saved_image_processor(args.vqvae), allow_unverified_pair=args.allow_unpaired_tokenizer
    )
    set_sampling_defaults(
        prior, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, guidance_scale=args.guidance_scale
    )
    pipeline.card_info = card_info_from_training_runs(args.vqvae, args.prior, args.dataset)
    # What the prior learnt from (else the tokenizer): kept in larp_pipeline.json, read by evaluate and sweep.
    record = DatasetRecord.from_folder(args.prior) or DatasetRecord.from_folder(args.vqvae)
    if record is not None:
        pipeline.card_info["training_data"] = record.to_dict()
        pipeline.card_info["dataset"] = args.dataset or record.source
    print(f"Training data: {record.describe() if record else 'not recorded by the prior or the tokenizer'}")
    start = time.perf_counter()
    pipeline.save_pretrained(output, sample_grid=not args.no_sample_grid, overwrite=args.overwrite)
    print(f"Wrote the pipeline to {output} ({time.perf_counter() - start:.1f} s)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 2 * 86400 else f"{seconds / 86400:.1f} days"


def _print_estimate(num_images: int, batch_size: int):
    """`save_samples`' progress: after its first batch, the whole request's size and time at that pace."""
    num_batches = math.ceil(num_images / batch_size)

    def progress(images_done: int, seconds: float):
        if images_done <= batch_size and num_batches > 1:
            total = seconds * num_images / images_done
            print(f"Sampling {num_images:,} images: about {num_batches:,} batches of {batch_size}, ~{_duration(total)} "
                  "at the first batch's pace", file=sys.stderr, flush=True)  # fmt: skip

    return progress


def generate(args):
    from larp_hf.output_folders import output_overlap
    from larp_hf.pipelines import is_pipeline_folder, save_samples

    grid_path = args.output or (None if args.image_dir or args.output_dataset else "samples.png")
    outputs = {"--output": grid_path, "--image-dir": args.image_dir, "--output-dataset": args.output_dataset}
    # A folder that holds no pipeline is refused as such when it loads, which says more.
    pipeline_folder = args.model if is_pipeline_folder(args.model) else None
    for flag, output in outputs.items():
        refusal = None if output is None else output_overlap(output, {"MODEL": pipeline_folder}, flag)
        if refusal:
            raise ValueError(refusal)
    # Where the results go is checked (writable) before the pipeline is loaded and anything sampled.
    if grid_path is not None:
        errors.check_output_path(grid_path, name="output")
    for folder, name in ((args.image_dir, "image_dir"), (args.output_dataset, "output_dataset")):
        if folder is not None:
            errors.check_output_path(folder, name=name, folder=True)
    labels = args.class_label[0] if args.class_label and len(args.class_label) == 1 else args.class_label
    saved = save_samples(
        _load_pipeline(args), args.num_images, grid_path=grid_path, image_dir=args.image_dir,
        output_dataset=args.output_dataset, nrow=args.nrow, batch_size=args.batch_size, class_labels=labels,
        seed=args.seed, overwrite=args.overwrite, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        guidance_scale=args.guidance_scale, progress=_print_estimate(args.num_images, args.batch_size),
    )  # fmt: skip
    count = args.num_images
    print(f"Sampled {count} images in {saved.seconds:.1f} s ({count / saved.seconds:.1f} images/s)")
    if grid_path is not None:
        print(f"Grid: {grid_path}")
    if args.image_dir:
        print(f"{count} PNG files: {args.image_dir}")
    if args.output_dataset:
        rows, columns = len(saved.dataset), saved.dataset.column_names
        print(f"Image dataset ({rows} rows, columns {columns}): {args.output_dataset}")


def info(args):
    description = {"model": str(args.model), **_load_pipeline(args).describe()}
    if args.json:
        print(json.dumps(description, indent=2))
        return
    print(f"LarpPipeline {args.model}")
    for part in ("vqvae", "prior"):
        print(f"  {part}:")
        for key, value in description[part].items():
            if key == "class_names":
                continue  # a line of its own below
            print(f"    {key:<15} {value:,}" if isinstance(value, int) else f"    {key:<15} {value}")
    names = description["prior"].get("class_names")
    if names:
        print("  classes: " + ", ".join(f"{index} {name}" for index, name in enumerate(names)))
    elif description["prior"]["num_classes"]:
        print(f"  classes: 0…{description['prior']['num_classes'] - 1} (unnamed: the prior's id2label is the default)")
    defaults = ", ".join(f"{k}={v}" for k, v in description["sampling_defaults"].items())
    print(f"  sampling defaults: {defaults}\n  dataset: {description['dataset'] or 'unknown'}")
    for name, value in description["metrics"].items():
        print(f"  {name}: {value}")
    for record in description["evaluations"]:
        scores = ", ".join(f"{name} {value:.4g}" for name, value in record["scores"].items())
        print(f"  {record['command']} ({record['dataset']} {record['split']}, n = {record['num_samples']}): {scores}")


def _result_line(number: int, record: dict, training_dataset: str | None) -> str:
    from larp_hf.pipelines.model_card import is_training_data

    scores = ", ".join(f"{name} {value:.4g}" for name, value in record["scores"].items())
    other = " (not the training data)" if is_training_data(record, training_dataset) is False else ""
    sampling = ", ".join(f"{name}={value}" for name, value in record["sampling"].items())
    return (
        f"  #{number}  {record['command']}  {record['dataset']} {record['split']}{other}  n = {record['num_samples']:,}"
        f"  {record['feature_network']}  {sampling}: {scores}"
    )


def card(args):
    from larp_hf.pipelines.card_results import CARD_NAME, card_results, remove_card_results, training_dataset

    if args.remove or args.remove_all:
        # A whole number is a result's number in --list; anything else names a dataset.
        which = [int(item) if item.isdigit() else item for item in args.remove or []]
        removed = remove_card_results(args.model, which or None, remove_all=args.remove_all)
        left = len(card_results(args.model))
        if not removed:
            print(f"The card of {args.model} holds no results; nothing to remove.")
            return
        print(f"Removed {len(removed)} result(s) from {Path(args.model) / CARD_NAME}; {left} left:")
    training, records = training_dataset(args.model), card_results(args.model)
    if args.json:
        print(json.dumps({"training_dataset": training, "results": records}, indent=2))
        return
    if not (args.remove or args.remove_all):
        print(f"Results on the card of {args.model} (trained on {training or 'an unrecorded dataset'}):")
    for number, record in enumerate(records, start=1):
        print(_result_line(number, record, training))
    if not records:
        print("  none")


def convert_tokenizer(args):
    from larp_hf.output_folders import folder_entries, output_overlap
    from larp_hf.tokenizers import convert_checkpoint

    refusal = output_overlap(args.output, {"CHECKPOINT": args.checkpoint}, "OUTPUT")
    if refusal:
        raise ValueError(refusal)
    if Path(args.output).is_file() or folder_entries(args.output):
        raise ValueError(
            f"OUTPUT {args.output} is not an empty folder; convert-tokenizer writes a new one. Pick another OUTPUT."
        )

    converted = convert_checkpoint(
        args.checkpoint, args.output, layout=args.layout, image_size=args.image_size, value_range=args.value_range
    )
    print(f"{converted.layout} checkpoint -> {converted.model_class} folder: {converted.folder}")
    for name, reason in converted.dropped.items():
        print(f"  dropped {name}: {reason}")


def _check_report_folder(args):
    """
    --output-dir takes reports (files of new names, nothing deleted): inside the pipeline folder it is welcome, and a
    re-save of the pipeline keeps them, but not inside one of its parts, nor among the other inputs.
    """
    from larp_hf.output_folders import how_paths_meet, output_overlap
    from larp_hf.pipelines import is_pipeline_folder
    from larp_hf.pipelines.folder import PARTS

    inputs = {"--feature-network": args.feature_network, "--dataset": args.dataset, "--dataset-dir": args.dataset_dir,
              "--token-dataset": getattr(args, "token_dataset", None)}  # fmt: skip
    refusal = output_overlap(args.output_dir, inputs, "--output-dir")
    if refusal:
        raise ValueError(refusal)
    if is_pipeline_folder(args.model):
        for part in PARTS:
            relation = how_paths_meet(args.output_dir, Path(args.model) / part)
            if relation in ("is", "lies inside"):
                raise ValueError(
                    f"--output-dir {args.output_dir} {relation} the pipeline's {part}/ folder, which its reports must "
                    f"not mix with. Choose the pipeline folder itself, another folder in it, or one apart."
                )


def _judging_setup(args):
    """The pipeline, the feature network beside it, this process's state, and whether to record the scores in the
    pipeline's model card (--record-in-card: by default on for a local pipeline folder, off with a note for a Hub id).
    Under `accelerate launch`, each process takes its own device and only the main one reports."""
    from larp_hf.evaluation import load_feature_network
    from larp_hf.evaluation.processes import evaluation_state
    from larp_hf.pipelines import is_pipeline_folder

    _check_report_folder(args)
    state = evaluation_state()
    local = is_pipeline_folder(args.model)
    if args.record_in_card and not local:
        raise ValueError(f"--record-in-card writes MODEL's model card; {args.model} is not a local pipeline folder.")
    if args.record_in_card is None and not local and state.is_main_process:
        print(f"Note: {args.model} is not a local pipeline folder; the scores are not recorded in a model card.")
    if state.num_processes > 1 and args.device is None:
        args.device = str(state.device)
    pipeline = _load_pipeline(args)
    if not state.is_main_process:
        pipeline.set_progress_bar_config(disable=True)
    record = local and args.record_in_card is not False
    return pipeline, load_feature_network(_feature_network(args, pipeline, state)).to(pipeline.device), state, record


def _feature_network(args, pipeline, state) -> str:
    """--feature-network, or the default for the data the samples are scored against (never another dataset's)."""
    from larp_hf.evaluation.scores import choose_real_dataset, default_feature_network

    if args.feature_network is not None:
        return args.feature_network
    choice = choose_real_dataset(pipeline, args.dataset, args.image_column, args.label_column, args.dataset_dir)
    network = default_feature_network(choice)
    if network is None:
        raise ValueError(
            f"--feature-network: name the feature space for {choice.source} ({choice.reason}); a classifier of other "
            "data would measure nothing about these images. Train one on it (`accelerate launch "
            "recipes/train_classifier.py --vqvae TOKENIZER --output_dir DIR`, labelled data), or pass 'inception' "
            "(the field's Inception-v3 FID) or 'random' (unlabelled data, offline)."
        )
    if state.is_main_process:
        print(f"Feature network: {network} (the default for {choice.source})")
    return network


def evaluate(args):
    from larp_hf import evaluation

    errors.check_output_path(args.output_dir, name="output_dir", folder=True)
    pipeline, network, state, record = _judging_setup(args)
    _print_real_dataset(pipeline, args, state)  # the library makes the same choice
    start = time.perf_counter()
    results = evaluation.evaluate_pipeline(
        pipeline, network, dataset=args.dataset, real_split=args.real_split, baseline_split=args.baseline_split,
        num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size, token_dataset=args.token_dataset,
        data_dir=args.dataset_dir, cache_dir=args.cache_dir, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, guidance_scale=args.guidance_scale, image_column=args.image_column,
        label_column=args.label_column,
    )  # fmt: skip
    if state.is_main_process:
        results["settings"].update(model=str(args.model), seconds=round(time.perf_counter() - start, 1))
        paths = evaluation.write_evaluation_reports(results, args.output_dir)
        print(evaluation.evaluation_markdown(results))
        seconds, processes = results["settings"]["seconds"], state.num_processes
        print(f"Wrote {', '.join(map(str, paths))} ({seconds} s, {processes} process(es))")
        if record:
            evaluation.record_evaluation_in_card(pipeline, results)
            pipeline.save_model_card(args.model)
            print(f"Recorded the sample scores in {Path(args.model) / 'README.md'}")
    _end_processes(state)


def sweep(args):
    from larp_hf import evaluation
    from larp_hf.pipelines import is_pipeline_folder

    if args.write_generation_config and (not is_pipeline_folder(args.model) or args.dtype not in (None, "float32")):
        raise ValueError("--write-generation-config saves MODEL again, weights included: it needs MODEL to be a local "
                         "pipeline folder, loaded without --dtype.")
    errors.check_output_path(args.output_dir, name="output_dir", folder=True)
    pipeline, network, state, record = _judging_setup(args)
    pipeline.set_progress_bar_config(disable=True)
    _print_real_dataset(pipeline, args, state)  # the library makes the same choice
    start = time.perf_counter()
    results = evaluation.sweep_pipeline(
        pipeline, network, args.temperature, args.top_k, args.guidance_scale, dataset=args.dataset,
        real_split=args.real_split,
        num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size, data_dir=args.dataset_dir,
        cache_dir=args.cache_dir, image_column=args.image_column, label_column=args.label_column,
    )  # fmt: skip
    if state.is_main_process:
        paths = evaluation.write_sweep_reports(results, args.output_dir)
        print(evaluation.sweep_markdown(results))
        seconds, processes = time.perf_counter() - start, state.num_processes
        print(f"Wrote {', '.join(map(str, paths))} ({seconds:.0f} s, {processes} process(es))")
        if record:
            evaluation.record_sweep_in_card(pipeline, results)
            print(f"Recorded the best setting's scores in {Path(args.model) / 'README.md'}")
        if args.write_generation_config:
            evaluation.save_best_setting(pipeline, results, args.model)  # writes the model card too
            print(f"Sampling defaults of {args.model}: {pipeline.sampling_defaults()}")
        elif record:
            pipeline.save_model_card(args.model)
    _end_processes(state)


def _print_real_dataset(pipeline, args, state):
    """Say which real images the samples are compared with: --dataset, else the dataset MODEL records, else
    Fashion-MNIST, and why."""
    from larp_hf.evaluation.scores import choose_real_dataset

    choice = choose_real_dataset(pipeline, args.dataset, args.image_column, args.label_column, args.dataset_dir)
    if state.is_main_process:
        print(choice.message())


def _end_processes(state):
    """Under `accelerate launch`: every process ends once the main one has written its files, process group closed
    (a gloo process leaving with its group open can abort at exit)."""
    state.wait_for_everyone()
    state.destroy_process_group()


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="larp-hf", description="Build, sample, describe and judge LARP pipelines.",
        epilog=f"A failure is told in a line or two; add {errors.DEBUG_FLAG} (anywhere) or set {errors.DEBUG_VARIABLE}=1 "
        "for its traceback.",
    )  # fmt: skip
    # Every sub-command's --help shows the defaults too (ArgumentParser's formatter).
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)

    def command(func, help: str, description: str | None = None, model: bool = True, samples: bool = True):
        p = commands.add_parser(func.__name__, help=help, description=description or help)
        p.set_defaults(func=func)
        if model:
            p.add_argument("model", help="pipeline folder or Hub repo id")
            p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
            p.add_argument("--no-verify", dest="verify", action="store_false",
                           help="load MODEL without checking its files against its larp_manifest.json (for a folder "
                           "edited on purpose)")
        add_pairing_argument(p)
        if model and samples:
            p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="load the models in this dtype")
            p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
        return p

    def add_pairing_argument(p):
        p.add_argument("--allow-unpaired-tokenizer", action="store_true",
                       help="accept a prior that records no tokenizer hash (paired by codebook size and grid only)")

    def add_sampling_arguments(p, default="the pipeline's sampling default"):
        p.add_argument("--temperature", type=float, help=f"default: {default}")
        p.add_argument("--top-k", type=_count(0), help=f"0 = off; default: {default}")
        p.add_argument("--top-p", type=float, help=f"1.0 = off; default: {default}")

    p = command(assemble, "put a trained tokenizer and prior into one pipeline folder (model card, sample grid)",
                "Write a LarpPipeline folder from a tokenizer (train_vqvae.py output, or any tokenizer folder "
                "larp_hf.load_tokenizer reads) and a prior (train_prior.py output): vqvae/, prior/, image_processor/, "
                "larp_pipeline.json, README.md, samples.png.", model=False)
    p.add_argument("--vqvae", required=True,
                   help="tokenizer folder: train_vqvae.py's, a diffusers VQModel / transformers JanusVQVAE or Emu3VQVAE "
                   "save_pretrained folder, or a convert-tokenizer output")
    p.add_argument("--prior", required=True, help="prior folder (save_pretrained format)")
    p.add_argument("--output", required=True, help="pipeline folder to write")
    p.add_argument("--dataset", help="training dataset named in the model card (default: the one the prior's, else the "
                   "tokenizer's training_data.json records)")
    add_sampling_arguments(p, default="the prior's stored value")
    p.add_argument("--guidance-scale", type=float,
                   help="class-conditional priors: the default guidance scale (>= 1); default: the prior's stored value")
    p.add_argument("--no-sample-grid", action="store_true", help="skip sampling the model card's 8x8 grid")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the pipeline in --output (files no pipeline save wrote there are kept)")

    p = command(generate, "sample images from a pipeline (folder or Hub repo id)",
                "Sample images and write a grid PNG, one PNG per image (--image-dir) and/or a datasets image dataset "
                "with the sampled codes (--output-dataset).")
    p.add_argument("--num-images", type=_count(1), default=64)
    p.add_argument("--batch-size", type=_count(1), default=64)
    add_sampling_arguments(p)
    p.add_argument("--seed", type=_count(0), default=0, help="the same seed gives the same images (default 0)")
    p.add_argument("--class-label", type=_class_labels,
                   help="class-conditional priors: one class, or comma-separated one per image, each a class name "
                   "(`larp-hf info` lists them) or index; 'null' for the unconditional model (default: the classes "
                   "in turn, one grid row each)")
    p.add_argument("--guidance-scale", type=float,
                   help="classifier-free guidance scale (>= 1; 1 = none; default: the pipeline's stored scale)")
    p.add_argument("--output", help="grid PNG (default samples.png unless --image-dir or --output-dataset is given)")
    p.add_argument("--nrow", type=_count(1), help="images per grid row (default: a square grid)")
    p.add_argument("--image-dir", help="also write one PNG per image to this folder")
    p.add_argument("--output-dataset", help="also save a datasets image dataset (image, codes[, label]) to this folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what an earlier generate wrote in --image-dir/--output-dataset (nothing else)")

    p = command(info, "describe a pipeline: parts, sizes, sampling defaults, metrics, recorded scores", samples=False)
    p.add_argument("--json", action="store_true", help="print JSON")

    def add_evaluation_arguments(p, num_samples):
        p.add_argument("--feature-network",
                       help="the feature space of the scores: a folder of a classifier from "
                       "recipes/train_classifier.py (labelled data; default: outputs/features-fashion-mnist for Fashion-MNIST, none "
                       "for other data); 'inception' for the field's "
                       "Inception-v3 FID (2048 pool3 features as torch-fidelity computes them; pip install "
                       "torch-fidelity; downloads weights-inception-2015-12-05-6726825d.pth on first use) or "
                       "'inception:PATH' with a local copy of that file (offline); or 'random[:SEED]', a fixed random "
                       "network (64 features) that needs no labels and no download, for unlabelled data offline: it "
                       "sees textures, not content, and its numbers compare only with runs on the same seed and "
                       "image size, never with published FIDs")
        p.add_argument("--dataset",
                       help="real images: 'fashion_mnist', a folder, a parquet/CSV file or a Hub id (default: the "
                       "dataset MODEL records it was trained on; Fashion-MNIST when it records none)")
        p.add_argument("--image-column", help="--dataset's column of the images (default: recorded, else found)")
        p.add_argument("--label-column", help="--dataset's column of the labels (default: recorded, else found)")
        p.add_argument("--dataset-dir", help="folder of the Fashion-MNIST IDX files (input)")
        p.add_argument("--real-split", default="test",
                       help="the real set the samples are compared with (default: %(default)s); FID needs more images "
                       "than features (Inception: > 2048), checked before sampling")
        p.add_argument("--num-samples", type=_count(1), default=num_samples,
                       help="samples drawn (default: %(default)s); more than the features (Inception: > 2048)")
        p.add_argument("--batch-size", type=_count(1), default=256)
        p.add_argument("--seed", type=_count(0), default=0)
        p.add_argument("--output-dir", required=True, help="where the tables (and plots) go")
        p.add_argument("--cache-dir", help="real-image feature cache (default $LARP_HF_CACHE or ~/.cache/larp_hf)")
        p.add_argument("--record-in-card", action=argparse.BooleanOptionalAction,
                       help="record the scores in MODEL's model card (default: on for a local pipeline folder)")

    p = command(evaluate, "score samples, the tokenizer's floor and a real baseline; check memorisation",
                "Score NUM_SAMPLES samples, the tokenizer's reconstructions and NUM_SAMPLES real baseline images "
                "against the real split on a feature network; measure how close samples come to training code grids. "
                "Writes evaluation.json and evaluation.md and records the sample scores in the model card. Under "
                "`accelerate launch` each process samples its share (the same numbers as one process).")
    add_evaluation_arguments(p, num_samples=10000)
    p.add_argument("--baseline-split", default="train", help="real images scored as a baseline; the training grids")
    p.add_argument("--token-dataset", help="token dataset of the training split (default: the tokenizer encodes it)")
    add_sampling_arguments(p)
    p.add_argument("--guidance-scale", type=float,
                   help="class-conditional priors (classes in turn): guidance scale; default: the stored scale")

    p = command(sweep, "score a grid of temperatures, top-k values (and guidance scales); store the best by FID",
                "Score NUM_SAMPLES samples at every temperature/top-k(/guidance scale) setting (same seed). Writes "
                "sweep.json, sweep.csv, sweep.md and sweep.png and records the best setting's scores in the pipeline's "
                "model card. Under "
                "`accelerate launch` each process samples its share (the same numbers as one process).")
    add_evaluation_arguments(p, num_samples=2000)
    p.add_argument("--temperature", type=list_of(float), default=[0.7, 0.8, 0.9, 1.0], help="comma-separated")
    p.add_argument("--top-k", type=list_of(int), default=[0, 50, 100, 200], help="comma-separated, 0 = off")
    p.add_argument("--guidance-scale", type=list_of(float),
                   help="class-conditional priors: comma-separated guidance scales (>= 1; default: the stored scale)")
    p.add_argument("--write-generation-config", action="store_true",
                   help="store the best setting as the pipeline's sampling default (generation config, the "
                   "prior's guidance scale, model card)")

    p = command(card, "list or remove the evaluation results on a pipeline's model card",
                "List the evaluation results (model-index entries and the Evaluation table) on the model card of a "
                "local pipeline folder, or remove some or all of them; the rest of README.md is kept. To replace a "
                "result, remove it and run `larp-hf evaluate`/`sweep` again.", model=False)
    p.add_argument("model", help="local pipeline folder")
    p.add_argument("--list", action="store_true", help="list the results, numbered (what the command does by default)")
    p.add_argument("--remove", action="append", metavar="RESULT",
                   help="remove result number RESULT (as --list numbers them) or every result on dataset RESULT; "
                   "repeat for more")
    p.add_argument("--remove-all", action="store_true", help="remove every result")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = commands.add_parser(
        "convert-tokenizer", help="turn a taming-transformers VQGAN or LlamaGen VQ checkpoint into a tokenizer folder",
        description="Read a taming-transformers VQGAN (.ckpt) or LlamaGen VQ (.pt) checkpoint without running any "
        "pickle, drop its discriminator/LPIPS/optimizer weights (listed), and write a diffusers VQModel or transformers "
        "JanusVQVAE folder that --vqvae, assemble and LarpPipeline take, with no taming or LlamaGen installed.",
    )
    p.set_defaults(func=convert_tokenizer)
    p.add_argument("checkpoint", help="the .ckpt / .pt / .safetensors file")
    p.add_argument("output", help="tokenizer folder to write")
    p.add_argument("--layout", choices=("taming", "llamagen"), help="default: recognised from the weights' names")
    p.add_argument("--image-size", type=_count(1),
                   help="the training image size (default: stored in the checkpoint, else 256)")
    p.add_argument("--value-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="pixel range the tokenizer expects (default -1 1, as both codebases train)")

    from larp_hf.demo import add_demo_commands

    add_demo_commands(commands)  # `demo` and `export-space`; Gradio is imported only when they run
    return parser  # fmt: skip


def _in_cli_terms(message: str, args) -> str:
    """A library error names its function's arguments (`num_samples`); the user typed flags (`--num-samples`)."""
    flags = {name: "--" + name.replace("_", "-") for name in vars(args) if name not in ("command", "func", "model")}
    flags.update(FLAGS_OF_ARGUMENTS)
    return re.sub(r"`(\w+)`", lambda match: f"`{flags.get(match[1], match[1])}`", message)


def _what_generate_kept(args) -> str:
    """Said after Ctrl-C in `generate`: what of the request is on disk (PNG files are written as sampling goes)."""
    if getattr(args, "image_dir", None):
        return (f"the PNG files written so far in {args.image_dir} are kept, named by image index; the grid and "
                "the dataset, written whole at the end, were not written")  # fmt: skip
    return "nothing was written (the grid and the dataset are written whole at the end)"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    debug = errors.debug_requested(argv)
    args = build_parser().parse_args([arg for arg in argv if arg != errors.DEBUG_FLAG])
    errors.run_command(
        lambda: args.func(args), debug=debug, in_user_terms=lambda message: _in_cli_terms(message, args),
        interrupted=(lambda: _what_generate_kept(args)) if args.func is generate else None,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
