"""The layout of a saved pipeline folder: `larp_pipeline.json` naming the parts, one sub-folder per part."""

import contextlib
import json
import logging
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from safetensors import safe_open


logger = logging.getLogger(__name__)

# The pipeline's own file. Not diffusers' `model_index.json`: `DiffusionPipeline` cannot load a LarpPipeline, so the
# folder does not pretend it can. Folders saved under that name by larp_hf 0.1.0.dev0 still load.
PIPELINE_CONFIG_NAME = "larp_pipeline.json"
LEGACY_CONFIG_NAME = "model_index.json"
SAMPLE_GRID_NAME = "samples.png"
PARTS = {"vqvae": "larp_hf", "prior": "transformers", "image_processor": "larp_hf"}  # sub-folder -> its library


def is_pipeline_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `LarpPipeline.save_pretrained`."""
    path = Path(path)
    return (path / PIPELINE_CONFIG_NAME).is_file() or (path / LEGACY_CONFIG_NAME).is_file()


def read_pipeline_index(path: Path, class_name: str, name) -> dict:
    """The folder's index, checked: it describes a `class_name` and every part's sub-folder is there."""
    index_path = path / PIPELINE_CONFIG_NAME
    if not index_path.is_file() and (path / LEGACY_CONFIG_NAME).is_file():
        index_path = path / LEGACY_CONFIG_NAME
        logger.info("%s uses the old %s; save_pretrained writes %s.", name, LEGACY_CONFIG_NAME, PIPELINE_CONFIG_NAME)
    if not index_path.is_file():
        raise ValueError(
            f"{name} has no {PIPELINE_CONFIG_NAME}, so it is not a LarpPipeline. Build one from a trained tokenizer "
            "and prior with `larp-hf assemble --vqvae DIR --prior DIR --output DIR`."
        )
    index = json.loads(index_path.read_text())
    found = index.get("pipeline_class", index.get("_class_name"))
    if found != class_name:
        raise ValueError(f"{index_path} describes a {found!r}, not a {class_name}.")
    for part in PARTS:
        if not (path / part).is_dir():
            raise ValueError(f"{path} lacks the `{part}/` folder that {index_path.name} names.")
    return index


def load_part(loader, folder: Path, **kwargs):
    """`loader(folder, **kwargs)`; a damaged or missing file becomes a `ValueError` that names it."""
    try:
        return loader(folder, **kwargs)
    except Exception as error:
        for weights in sorted(Path(folder).glob("*.safetensors")):
            try:
                with safe_open(str(weights), framework="pt") as handle:
                    for name in handle.keys():
                        handle.get_slice(name)
            except Exception as damage:
                raise ValueError(
                    f"{weights} is damaged or incomplete ({damage}); download or copy the pipeline again."
                ) from None
        raise ValueError(f"Could not load {folder}: {type(error).__name__}: {error}") from error


def write_pipeline_index(folder: Path, class_name: str, parts: dict, card_info: dict):
    """Write `larp_pipeline.json` (and drop an old `model_index.json`): the pipeline class, its parts, the card info."""
    index = {
        "pipeline_class": class_name,
        "larp_hf_version": version("larp_hf"),
        "parts": {name: {"library": PARTS[name], "class": type(part).__name__} for name, part in parts.items()},
        "model_card": card_info,
    }
    write_text_atomic(folder / PIPELINE_CONFIG_NAME, json.dumps(index, indent=2) + "\n")
    if (folder / LEGACY_CONFIG_NAME).is_file():
        (folder / LEGACY_CONFIG_NAME).unlink()


@contextlib.contextmanager
def replace_folder(target: Path, overwrite: bool = False):
    """
    Yield an empty folder beside `target` to write into; on success it takes `target`'s place: the old folder is
    renamed aside, the new one renamed in, the old one removed. At every moment either the old or the new complete
    folder is at `target` or beside it (`.old-*`); a failure leaves `target` as it was. A non-empty `target` that is
    not a pipeline folder is refused unless `overwrite`.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file, not a folder; pick another place for the pipeline.")
    if target.is_dir() and any(target.iterdir()) and not is_pipeline_folder(target) and not overwrite:
        raise ValueError(
            f"{target} is not empty and holds no pipeline; pick another folder or pass overwrite=True to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = target.parent / f".old-{partial.name[len('.tmp-'):]}"
    if target.exists():
        os.replace(target, old)
    os.replace(partial, target)
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str):
    """Write through a temporary file and a rename, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


__all__ = ["PIPELINE_CONFIG_NAME", "is_pipeline_folder", "read_pipeline_index", "replace_folder", "write_pipeline_index"]
