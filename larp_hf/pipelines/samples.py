"""Sampled images written out: one grid PNG, one PNG per image and a `datasets` dataset of images, codes and labels."""

import math
import os
import re
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
from ..output_folders import (
    BOOKKEEPING,
    OUTPUT_MARK,
    FolderClaim,
    claim_folder,
    entries_written_by,
    folder_entries,
    how_paths_meet,
    names_list,
    read_mark,
    remove_entry,
    write_mark,
)
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


# The marks (`larp_hf.output_folders`) of the folders `save_samples` writes: what `overwrite` may replace there.
IMAGES_MARK = "save_samples image_dir"
DATASET_MARK = "save_samples output_dataset"
_IMAGE_NAME = re.compile(r"\d{5,}\.png")


def _is_taken(folder) -> bool:
    return folder is not None and Path(folder).exists() and (Path(folder).is_file() or bool(folder_entries(folder)))


def _image_index(name: str) -> int | None:
    """The index of an image file `save_samples` names (`00042.png` -> 42), else None."""
    if not _IMAGE_NAME.fullmatch(name) or f"{int(name[:-4]):05d}.png" != name:
        return None
    return int(name[:-4])


def _images_written_before(image_dir: Path) -> int:
    """How many images an earlier `save_samples` wrote into `image_dir` (its mark's count: the names alone would
    make a mark as long as the request), 0 without its mark."""
    mark = read_mark(image_dir)
    count = mark.get("images") if mark is not None and mark.get("command") == IMAGES_MARK else 0
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def _check_outputs_apart(grid_path, image_dir, output_dataset):
    """An output inside another would be deleted or mixed up by it: the dataset folder is swapped in whole, and the
    image folder's numbered PNGs are replaced."""
    if image_dir is not None and output_dataset is not None:
        relation = how_paths_meet(image_dir, output_dataset)
        if relation is not None:
            raise ValueError(f"`image_dir` {image_dir} {relation} `output_dataset` {output_dataset}; keep them apart.")
    if grid_path is not None and output_dataset is not None and how_paths_meet(grid_path, output_dataset):
        raise ValueError(f"`grid_path` {grid_path} lies inside `output_dataset` {output_dataset}, which is replaced "
                         "whole; put the grid elsewhere.")  # fmt: skip
    if grid_path is not None and image_dir is not None:
        inside = Path(grid_path).resolve().parent == Path(image_dir).resolve()
        if inside and _IMAGE_NAME.fullmatch(Path(grid_path).name):
            raise ValueError(
                f"`grid_path` {grid_path} is named as one of the images in `image_dir`; name it otherwise."
            )


def _claim_image_dir(image_dir: Path, num_images: int, overwrite: bool) -> tuple[FolderClaim, set[str]]:
    """
    Claim `image_dir` (`claim_folder`) and return the claim and what an earlier `save_samples` wrote there that this
    one will not write again (removed at the end). A non-empty folder is refused without `overwrite`; with it, a name
    this run writes that no earlier run wrote (a user's file, a link planted there) is refused, naming it.
    """
    claim = claim_folder(image_dir, "image_dir")
    try:
        present = folder_entries(image_dir)
        if present and not overwrite:
            raise ValueError(
                f"{image_dir} already exists and is not empty; pick another `image_dir` or pass `overwrite`."
            )
        written_before = _images_written_before(image_dir)
        indices = {name: _image_index(name) for name in present}
        in_the_way = [name for name, i in indices.items() if i is not None and written_before <= i < num_images]
        if in_the_way:
            raise ValueError(
                f"{image_dir} holds {names_list(sorted(in_the_way))}, which no earlier sampling into it wrote (by "
                f"its mark {OUTPUT_MARK}); `overwrite` replaces only what one wrote. Move them away or pick another "
                "`image_dir`."
            )
        # Until the end, the mark counts the old images and the new ones: a run that dies leaves none unaccounted for.
        write_mark(image_dir, IMAGES_MARK, [], images=max(written_before, num_images))
    except BaseException:
        claim.release()
        raise
    return claim, {name for name, i in indices.items() if i is not None and num_images <= i < written_before}


def _claim_output_dataset(output_dataset: Path, overwrite: bool) -> FolderClaim:
    """Claim `output_dataset` (`claim_folder`); a non-empty one is refused without `overwrite`, and with it unless
    an earlier `save_samples` wrote all of it (it is replaced whole)."""
    if Path(output_dataset).is_file():
        raise ValueError(f"{output_dataset} is a file; pick another `output_dataset` (a folder).")
    claim = claim_folder(output_dataset, "output_dataset")
    try:
        present = folder_entries(output_dataset)
        if present and not overwrite:
            raise ValueError(
                f"{output_dataset} already exists and is not empty; pick another `output_dataset` or pass `overwrite`."
            )
        foreign = [name for name in present if name not in entries_written_by(output_dataset, DATASET_MARK)]
        if foreign:
            raise ValueError(
                f"{output_dataset} holds {names_list(foreign)}, which no earlier sampling into it wrote (its mark "
                f"{OUTPUT_MARK} does not list them), and `overwrite` replaces the folder whole. Move them away or "
                "pick another `output_dataset`."
            )
    except BaseException:
        claim.release()
        raise
    return claim


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

    Both folders are claimed before any sampling (`larp_hf.output_folders.claim_folder`): a second writer into one
    is refused at once. Each PNG is created as a new file, never written through a link found in `image_dir`.

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
        overwrite: write into a non-empty `image_dir` or `output_dataset`; refused otherwise. It replaces only what
            an earlier `save_samples` wrote there (the folder's mark, `larp_hf.output_folders.OUTPUT_MARK`, lists
            it): other files in `image_dir` are kept, or refused by name where an image would replace one; an
            `output_dataset` holding anything else is refused.
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
    _check_outputs_apart(grid_path, image_dir, output_dataset)
    class_labels = pipeline.class_indices(class_labels)  # names to indices, before the labels are counted or written
    classes_in_turn = class_labels is None and pipeline.num_classes > 0
    # Classes in turn are the pipeline's default, spelled out part by part for the dataset's labels (a list of
    # `num_images` labels would hold 8 GB for 10^9 images before the first is drawn).
    has_labels = classes_in_turn or (class_labels is not None and not isinstance(class_labels, str))  # null: none
    if seed is None:
        seed = int(torch.randint(2**62, ()))

    # The outputs are claimed before any sampling: a second writer is refused now, not mixed in later.
    claims, stale_images = [], set()
    outputs = [Path(folder) for folder in (image_dir, output_dataset) if folder is not None]
    created = [folder for folder in outputs if not folder.exists()]
    try:
        if image_dir is not None:
            claim, stale_images = _claim_image_dir(Path(image_dir), num_images, overwrite)
            claims.append(claim)
        if output_dataset is not None:
            claims.append(_claim_output_dataset(Path(output_dataset), overwrite))
        saved = _sample_and_write(
            pipeline, num_images, grid_path=grid_path, image_dir=image_dir, output_dataset=output_dataset, nrow=nrow,
            batch_size=batch_size, class_labels=class_labels, classes_in_turn=classes_in_turn, has_labels=has_labels,
            seed=seed, keep_images=keep_images, progress=progress, sampling=sampling,
        )  # fmt: skip
        if image_dir is not None:
            for name in sorted(stale_images):  # an earlier run's images beyond this run's count
                remove_entry(Path(image_dir) / name)
            write_mark(image_dir, IMAGES_MARK, [], images=num_images)
    finally:
        for claim in claims:
            claim.release()
        for folder in created:  # a folder the claim made for a run that failed before writing into it
            if folder.is_dir() and not folder_entries(folder):
                for name in BOOKKEEPING:
                    (folder / name).unlink(missing_ok=True)
                folder.rmdir()
    return saved


def _sample_and_write(
    pipeline, num_images, *, grid_path, image_dir, output_dataset, nrow, batch_size, class_labels, classes_in_turn,
    has_labels, seed, keep_images, progress, sampling,
) -> SavedSamples:  # fmt: skip
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
                    _write_new_png(Path(image_dir) / f"{index:05d}.png", image)
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
            # The folder holds the claim (and any dataset of an earlier run, checked to be ours): replaced whole.
            with swap_folder(output_dataset) as folder:
                dataset.save_to_disk(str(folder))
                write_mark(folder, DATASET_MARK, os.listdir(folder))
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


def _write_new_png(path: Path, image: PIL.Image.Image):
    """Write `image` as a new file at `path`: what was there (an earlier run's image, listed in the mark) is removed
    first, and the file is created exclusively, so that a link put there is never written through."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(descriptor, "wb") as handle:
        image.save(handle, format="PNG")


__all__ = ["DATASET_MARK", "IMAGES_MARK", "MAX_GRID_IMAGES", "PART_IMAGES", "SavedSamples", "save_samples"]
