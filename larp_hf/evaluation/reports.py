"""
What `evaluate_pipeline` and `sweep_pipeline` results become: markdown tables, JSON and CSV files, the sweep's plot,
and records on the pipeline's model card.
"""

import contextlib
import csv
import logging
from pathlib import Path

from ..atomic_files import open_atomic, write_json_atomic, write_text_atomic
from ..pipelines.folder import SAMPLE_GRID_NAME
from ..pipelines.model_card import card_lock, merge_records_on_disk
from ..prior import set_sampling_defaults


logger = logging.getLogger(__name__)
SCORE_COLUMNS = ("fid", "precision", "recall", "density", "coverage")


def _scores_cells(scores: dict, bold_fid: bool = False) -> str:
    bold = "**" if bold_fid else ""
    fid, *others = (f"{scores[name]:.3f}" for name in SCORE_COLUMNS)
    return " | ".join([f"{bold}{fid}{bold}", *others])


def _guidance_words(sampling: dict) -> str:
    scale = sampling.get("guidance_scale", 1.0)
    return "" if scale == 1 else f", classes in turn, guidance {scale}"


def evaluation_markdown(results: dict) -> str:
    """The results of `evaluate_pipeline` as a markdown table and a memorisation sentence."""
    settings = results["settings"]
    sampling = settings["sampling"]
    name = settings["feature_network"]
    n = settings["num_samples"]
    rows = [
        (f"samples (temperature {sampling['temperature']}, top-k {sampling['top_k'] or 'off'}, top-p "
         f"{sampling['top_p']}{_guidance_words(sampling)}), n = {n}", results["samples"]),
        (f"tokenizer reconstructions of {settings['real_split']} (the floor), n = {settings['reconstructed_images']}",
         results["reconstructions"]),
        (f"real {settings['baseline_split']} images (baseline), n = {settings.get('baseline_images', n)}",
         results["real_baseline"]),
    ]  # fmt: skip
    lines = [
        f"Against {settings['real_images']:,} real `{settings['dataset']}` {settings['real_split']} images; features: "
        f"{name} (weights SHA-256 `{settings['feature_network_sha256'][:16]}…`).",
        "",
        f"| | FID ({name}) | precision | recall | density | coverage |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {label} | {_scores_cells(scores)} |" for label, scores in rows]
    memo = results["memorisation"]
    q = memo["hamming_to_nearest_quantiles"]
    grid = f"{memo['grid'][0]}×{memo['grid'][1]} grids, " if "grid" in memo else ""  # results written before grids
    lines += [
        "",
        f"Memorisation (code space, {grid}{memo['codes_per_grid']} codes per grid): {memo['exact_copies']:.2%} of the "
        f"samples are identical to a training grid; Hamming distance to the nearest training grid: mean "
        f"{memo['hamming_to_nearest_mean']:.1f}, min {q['min']:.0f}, 5% {q['p5']:.0f}, median {q['median']:.0f}, "
        f"max {q['max']:.0f}.",
    ]
    return "\n".join(lines) + "\n"


def sweep_markdown(results: dict) -> str:
    """The rows of `sweep_pipeline` as a markdown table, the best FID in bold."""
    rows, best, settings = results["rows"], results["best"], results["settings"]
    guided = settings.get("num_classes", 0) > 0  # a class-conditional pipeline: the guidance scale is a column
    guidance_header, guidance_rule = ("guidance | ", "--- | ") if guided else ("", "")
    lines = [
        f"| temperature | top-k | {guidance_header}FID ({settings['feature_network']}) | precision | recall | density "
        "| coverage |",
        f"| --- | --- | {guidance_rule}--- | --- | --- | --- | --- |",
    ]
    for row in rows:
        guidance = f"{row.get('guidance_scale', 1.0)} | " if guided else ""
        lines.append(f"| {row['temperature']} | {row['top_k'] or 'off'} | {guidance}{_scores_cells(row, row is best)} |")
    best_guidance = f", guidance {best.get('guidance_scale', 1.0)}" if guided else ""
    classes = f" ({settings['num_classes']} classes in turn)" if guided else ""
    lines += ["", f"{settings['num_samples']} samples per setting{classes}, top-p {best['top_p']}. Best by FID: "
              f"temperature {best['temperature']}, top-k {best['top_k'] or 'off'}{best_guidance} (FID "
              f"{best['fid']:.3f})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def sweep_plots(results: dict, output_dir: str | Path) -> list[Path]:
    """sweep.png: FID against temperature (or the guidance scale, when only it was swept) beside precision against
    recall, one line per top-k (and guidance scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, feature_name = results["rows"], results["settings"]["feature_network"]
    # x: the temperature, unless only the guidance scale was swept; one line per value of the other settings.
    scales = {row.get("guidance_scale", 1.0) for row in rows}
    only_guidance = len({row["temperature"] for row in rows}) == 1 and len(scales) > 1
    x_name, short = ("guidance_scale", "g") if only_guidance else ("temperature", "T")

    def line_of(row):  # what a line holds fixed
        return row["top_k"], None if only_guidance else row.get("guidance_scale", 1.0)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for top_k, scale in sorted({line_of(row) for row in rows}, key=str):
        series = sorted((row for row in rows if line_of(row) == (top_k, scale)), key=lambda row: row.get(x_name, 1.0))
        label = f"top-k {top_k or 'off'}" + (f", guidance {scale}" if scale is not None and len(scales) > 1 else "")
        axes[0].plot([r.get(x_name, 1.0) for r in series], [r["fid"] for r in series], marker="o", label=label)
        axes[1].plot([r["recall"] for r in series], [r["precision"] for r in series], marker="o", label=label)
        for row in series:
            axes[1].annotate(f"{short}={row.get(x_name, 1.0)}", (row["recall"], row["precision"]), fontsize=7,
                             textcoords="offset points", xytext=(3, 3))  # fmt: skip
    axes[0].set(xlabel=x_name.replace("_", " "), ylabel=f"FID ({feature_name})", title="FID (lower is better)")
    axes[1].set(xlabel="recall (diversity)", ylabel="precision (quality)", title="precision against recall")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(output_dir) / "sweep.png"
    with open_atomic(path) as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
    return [path]


def write_evaluation_reports(results: dict, output_dir: str | Path) -> list[Path]:
    """evaluation.json (everything) and evaluation.md (the table) in `output_dir`, each written whole or not at all."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "evaluation.json", results)
    write_text_atomic(output_dir / "evaluation.md", evaluation_markdown(results))
    return [output_dir / "evaluation.json", output_dir / "evaluation.md"]


def write_sweep_reports(results: dict, output_dir: str | Path) -> list[Path]:
    """
    sweep.json (everything), sweep.csv (one row per setting), sweep.md and sweep.png in `output_dir`, each written
    whole or not at all.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "sweep.json", results)
    with open_atomic(output_dir / "sweep.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(results["rows"][0]))
        writer.writeheader()
        writer.writerows(results["rows"])
    write_text_atomic(output_dir / "sweep.md", sweep_markdown(results))
    return [output_dir / name for name in ("sweep.json", "sweep.csv", "sweep.md")] + sweep_plots(results, output_dir)


def _record(pipeline, command: str, scores: dict, settings: dict, sampling: dict):
    pipeline.record_evaluation(
        command,
        {name: scores[name] for name in SCORE_COLUMNS},
        feature_network=settings["feature_network"],
        feature_network_sha256=settings["feature_network_sha256"],
        dataset=settings["dataset"],
        split=settings["real_split"],
        num_samples=settings["num_samples"],
        sampling=sampling,
    )
    logger.info("%s: FID %.4f recorded for the model card", command, scores["fid"])


def record_evaluation_in_card(pipeline, results: dict, command: str = "larp-hf evaluate"):
    """
    Add the sample scores of an `evaluate_pipeline` result, with the sampling settings, n and feature network they
    were measured with, to the pipeline's card records (`LarpPipeline.record_evaluation`). Write the card with
    `pipeline.save_model_card(folder)`.
    """
    _record(pipeline, command, results["samples"], results["settings"], results["settings"]["sampling"])


def record_sweep_in_card(pipeline, results: dict, command: str = "larp-hf sweep"):
    """As `record_evaluation_in_card`, for the best setting of a `sweep_pipeline` result."""
    best = results["best"]
    sampling = {name: best[name] for name in ("temperature", "top_k", "top_p", "guidance_scale") if name in best}
    _record(pipeline, command, best, results["settings"], sampling)


def save_best_setting(pipeline, results: dict, folder: str | Path):
    """
    Make the best setting of a `sweep_pipeline` result the pipeline's sampling default (top-p, not swept, keeps its
    stored value; a class-conditional prior also stores the guidance scale, where stock `generate` does not read it)
    and save the pipeline to `folder` again: generation config, a new sample grid if the folder had one, and the model
    card with its records and those other commands recorded meanwhile; the folder's other files (reports) are kept.
    """
    best = results["best"]
    guidance = {"guidance_scale": best["guidance_scale"]} if pipeline.num_classes > 0 and "guidance_scale" in best else {}
    set_sampling_defaults(pipeline.prior, temperature=best["temperature"], top_k=best["top_k"], **guidance)
    # Under the card's lock, with the records other commands wrote since the pipeline was loaded: the re-save
    # replaces the card whole. The lock file is no save's, so the new folder keeps it (the same file, linked).
    with card_lock(Path(folder)) if Path(folder).is_dir() else contextlib.nullcontext():  # a new folder: no card yet
        merge_records_on_disk(pipeline, folder)
        pipeline.save_pretrained(folder, sample_grid=(Path(folder) / SAMPLE_GRID_NAME).is_file())
    logger.info("Sampling defaults of %s: %s", folder, pipeline.sampling_defaults())


__all__ = [
    "evaluation_markdown",
    "record_evaluation_in_card",
    "record_sweep_in_card",
    "save_best_setting",
    "sweep_markdown",
    "sweep_plots",
    "write_evaluation_reports",
    "write_sweep_reports",
]
