"""Sampled images written out: one grid PNG, one PNG per image and a `datasets` dataset of images, codes and labels."""

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import torch

from ..atomic_files import open_atomic, swap_folder
from .image_grid import image_grid, to_pil_images
from .pipeline_larp import LarpPipeline


MAX_GRID_IMAGES = 4096  # one grid PNG
PART_IMAGES = 1024  # images sampled, written and dropped at a time (at least one batch)


@dataclass
class SavedSamples:
    """
    What `save_samples` sampled and wrote.

    Args:
        num_images: the images sampled.
        seconds: the time spent in the pipeline's calls (sampling and decoding), not in writing.
        grid: the grid of all images (drawn with `grid_path` or `keep_images`), else None.
        dataset: the dataset written to `output_dataset` (memory-mapped from there), else None.
        images: with `keep_images`, the PIL images in sampling order, else None.
        codes: with `keep_images`, the (N, h, w) int64 codes, else None.
    """

    num_images: int
    seconds: float
    grid: PIL.Image.Image | None = None
    dataset: datasets.Dataset | None = None
    images: list[PIL.Image.Image] | None = None
    codes: np.ndarray | None = None


def _is_taken(folder) -> bool:
    return folder is not None and Path(folder).exists() and (Path(folder).is_file() or any(Path(folder).iterdir()))


def save_samples(
    pipeline: LarpPipeline,
    num_images: int,
    *,
    grid_path: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    output_dataset: str | os.PathLike | None = None,
    nrow: int | None = None,
    batch_size: int = 64,
    class_labels: int | list[int] | str | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    keep_images: bool = False,
    progress: Callable[[int, float], None] | None = None,
    **sampling,
) -> SavedSamples:
    r"""
    Sample `num_images` images with `pipeline` and write them: a grid PNG (`grid_path`), `00000.png`, `00001.png`, ...
    (`image_dir`) and a dataset saved with `save_to_disk` (`output_dataset`: columns `image`, `codes` (h·w int32) and,
    when classes are sampled, `label`). What `larp-hf generate` and the demo page write.

    Images are sampled, written and dropped `PART_IMAGES` at a time (or a batch, if larger), so memory does not grow
    with `num_images` (but for the grid and `keep_images`): the parts are calls with `first_image_index`, so they give
    exactly the images of one call with the same seed. The dataset's parts are written beside `output_dataset` and
    joined there at the end.

    A class-conditional pipeline samples its classes in turn unless `class_labels` says otherwise (image i gets class
    `i % num_classes`); the grid then holds the images sorted by class, `ceil(num_images / num_classes)` a row unless
    `nrow` is given: one class a row when the classes come out even.

    Args:
        pipeline (`LarpPipeline`): the pipeline to sample from.
        num_images: how many images.
        grid_path: a `.png` file for the grid of all images (at most `MAX_GRID_IMAGES`).
        image_dir: a folder for one PNG per image, named by its index.
        output_dataset: a folder for the dataset.
        nrow: images per grid row (default: square-ish, or as above for classes in turn).
        batch_size: images sampled together (see `LarpPipeline.__call__`).
        class_labels: as for `LarpPipeline.__call__`; one label (index or name) per image, one for all, or `"null"`.
        seed: the images' seed; None draws one from the global RNG (the parts still share it).
        overwrite: write into a non-empty `image_dir` or `output_dataset`; refused otherwise.
        keep_images: also return the PIL images and the codes (memory then grows with `num_images`).
        progress: called as `progress(images_done, seconds)` after each part; the first part is one batch, so a
            caller can tell the time the whole request will take early (`larp-hf generate` prints it).
        **sampling: `temperature`, `top_k`, `top_p`, `guidance_scale`, `prepack_linears`, passed to every
            `pipeline(...)` call.

    Returns:
        `SavedSamples`.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"`num_images` must be a positive integer, got {num_images!r}.")
    if grid_path is not None and Path(grid_path).suffix.lower() != ".png":
        raise ValueError(f"`grid_path` names the grid image and must end in .png, got {grid_path}.")
    if grid_path is not None and num_images > MAX_GRID_IMAGES:
        raise ValueError(
            f"`grid_path` draws one grid of at most {MAX_GRID_IMAGES} images, not {num_images}; write larger "
            "requests with `image_dir` or `output_dataset` (they are written as sampling goes)."
        )
    for folder, name in ((image_dir, "image_dir"), (output_dataset, "output_dataset")):
        if _is_taken(folder) and not overwrite:
            raise ValueError(f"{folder} already exists and is not empty; pick another `{name}` or pass `overwrite`.")
    if isinstance(class_labels, (list, tuple)) and len(class_labels) != num_images:
        raise ValueError(f"`class_labels` holds {len(class_labels)} labels for {num_images} images.")
    class_labels = pipeline.class_indices(class_labels)  # names to indices, before the labels are counted or written
    classes_in_turn = class_labels is None and pipeline.num_classes > 0
    # Classes in turn are the pipeline's default, spelled out part by part for the dataset's labels (a list of
    # `num_images` labels would hold 8 GB for 10^9 images before the first is drawn).
    has_labels = classes_in_turn or (class_labels is not None and not isinstance(class_labels, str))  # null: none
    if seed is None:
        seed = int(torch.randint(2**62, ()))

    if image_dir is not None:
        Path(image_dir).mkdir(parents=True, exist_ok=True)
    features = {"image": datasets.Image(), "codes": datasets.Sequence(datasets.Value("int32"))}
    if has_labels:
        names = pipeline.class_names
        features["label"] = datasets.Value("int64") if names is None else datasets.ClassLabel(names=names)
    grid_parts, pil_images, codes, part_folders, seconds = [], [], [], [], 0.0
    parts_dir = None
    if output_dataset is not None:
        Path(output_dataset).parent.mkdir(parents=True, exist_ok=True)
        parts_dir = Path(tempfile.mkdtemp(prefix=".larp-generate-", dir=Path(output_dataset).parent))
    try:
        part_size = max(batch_size, PART_IMAGES)
        # The first part's first batch alone, so that `progress` hears of it early; the batches stay those of whole
        # parts (a part's batches start at its start), so the images are the same.
        starts = sorted({*range(0, num_images, part_size), *([batch_size] if batch_size < num_images else [])})
        for first, end in zip(starts, [*starts[1:], num_images]):
            size = end - first
            part_labels = class_labels
            if classes_in_turn:
                part_labels = [index % pipeline.num_classes for index in range(first, end)]
            elif isinstance(class_labels, (list, tuple)):
                part_labels = class_labels[first:end]
            start = time.perf_counter()
            result = pipeline(
                num_images=size, batch_size=batch_size, class_labels=part_labels, seed=seed, output_type="pt",
                first_image_index=first, **sampling,
            )  # fmt: skip
            seconds += time.perf_counter() - start
            part_images = to_pil_images(result.images)
            if grid_path is not None or keep_images:
                grid_parts.append(result.images)
            if keep_images:
                pil_images.extend(part_images)
                codes.append(result.codes)
            if image_dir is not None:
                for index, image in enumerate(part_images, start=first):
                    image.save(Path(image_dir) / f"{index:05d}.png")
            if parts_dir is not None:
                columns = {"image": part_images, "codes": result.codes.flatten(1).tolist()}
                if has_labels:
                    columns["label"] = torch.as_tensor(part_labels).expand(size).tolist()
                part_folders.append(str(parts_dir / f"part-{len(part_folders):05d}"))
                datasets.Dataset.from_dict(columns, features=datasets.Features(features)).save_to_disk(part_folders[-1])
            if progress is not None:
                progress(end, seconds)

        saved = SavedSamples(num_images=num_images, seconds=seconds)
        # The dataset first: a grid that cannot be written (full disk, a folder in its place) loses only the grid.
        if parts_dir is not None:
            dataset = datasets.concatenate_datasets([datasets.load_from_disk(part) for part in part_folders])
            with swap_folder(output_dataset, replace=overwrite) as folder:
                dataset.save_to_disk(str(folder))
            saved.dataset = datasets.load_from_disk(str(output_dataset))  # memory-mapped from where it now lives
        if grid_parts:
            images = torch.cat(grid_parts)
            if classes_in_turn:
                in_turn = torch.arange(num_images) % pipeline.num_classes
                images = images[in_turn.argsort(stable=True)]  # class 0's images, then 1's, ...
                nrow = nrow or math.ceil(num_images / pipeline.num_classes)
            saved.grid = image_grid(images, nrow=nrow)
            if grid_path is not None:
                Path(grid_path).parent.mkdir(parents=True, exist_ok=True)
                with open_atomic(grid_path) as handle:
                    saved.grid.save(handle, format="PNG")
        if keep_images:
            saved.images, saved.codes = pil_images, torch.cat(codes).numpy()
    finally:
        if parts_dir is not None:
            shutil.rmtree(parts_dir, ignore_errors=True)
    return saved


__all__ = ["MAX_GRID_IMAGES", "PART_IMAGES", "SavedSamples", "save_samples"]
