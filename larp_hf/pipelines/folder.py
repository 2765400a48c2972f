"""The layout of a saved pipeline folder: `larp_pipeline.json` naming the parts, one sub-folder per part."""

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
from importlib.metadata import version
from pathlib import Path

from safetensors import safe_open

from ..atomic_files import swap_folder, write_json_atomic
from ..output_folders import entries_written_by, folder_entries, write_mark

logger = logging.getLogger(__name__)

# The pipeline's own file. Not diffusers' `model_index.json`: `DiffusionPipeline` cannot load a LarpPipeline, so the
# folder does not pretend it can.
PIPELINE_CONFIG_NAME = "larp_pipeline.json"
SAMPLE_GRID_NAME = "samples.png"
PARTS = ("vqvae", "prior", "image_processor")  # one sub-folder each
MANIFEST_NAME = "larp_manifest.json"
MANIFEST_FORMAT = "larp_hf-pipeline-manifest/1"
# Left out of the manifest: the model card, which people edit on the Hub and `save_model_card` rewrites; loading
# never reads it.
UNLISTED_NAMES = ("README.md",)
# What to install for a part's library when it is missing (larp_hf's extras; any other library by its own name).
INSTALL_HINTS = {"diffusers": "pip install larp_hf[diffusers]"}


def is_pipeline_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `LarpPipeline.save_pretrained`."""
    path = Path(path)
    return (path / PIPELINE_CONFIG_NAME).is_file()


def read_pipeline_index(path: Path, class_name: str, name) -> dict:
    """The folder's index, checked: it describes a `class_name` and every part's sub-folder is there."""
    index_path = path / PIPELINE_CONFIG_NAME
    if not index_path.is_file():
        raise ValueError(
            f"{name} has no {PIPELINE_CONFIG_NAME}, so it is not a LarpPipeline. Build one from a trained tokenizer "
            "and prior with `larp-hf assemble --vqvae DIR --prior DIR --output DIR`."
        )
    index = json.loads(index_path.read_text())
    found = index.get("pipeline_class")
    if found != class_name:
        raise ValueError(f"{index_path} describes a {found!r}, not a {class_name}.")
    for part in PARTS:
        if not (path / part).is_dir():
            raise ValueError(f"{path} lacks the `{part}/` folder that {index_path.name} names.")
    return index


def check_no_remote_code(folder: Path, what: str = "prior") -> None:
    """
    Refuse a model folder whose `config.json` has a model type transformers does not know and names code of its own
    (`auto_map`): loading it would mean running that code, which larp_hf never does. A known model type with an
    `auto_map` loads the stock class (the `trust_remote_code=False` every loader passes).
    """
    from transformers import CONFIG_MAPPING

    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return  # the loader names the damaged file
    model_type = config.get("model_type")
    if config.get("auto_map") and model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"The {what} in {folder} has model type {model_type!r}, which transformers does not know, and its "
            f"config names code of its own to run ({', '.join(sorted(config['auto_map'].values()))}). larp_hf never "
            f"runs code from a model folder. Use a {what} of a stock architecture (train_prior.py writes GPT-2 or Llama)."
        )


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


def part_record(part) -> dict:
    """
    What `larp_pipeline.json` says of one part: the `library` and `class` of the model it holds and, for a tokenizer
    that wraps a library's model (a `larp_hf.tokenizers.TokenizerAdapter`), the larp_hf `adapter` around it, e.g.
    `{"library": "diffusers", "class": "VQModel", "adapter": "DiffusersVQTokenizer"}`.
    """
    library, wrapped = getattr(part, "library", None), getattr(part, "model", None)
    if isinstance(getattr(part, "adapter_name", None), str) and isinstance(library, str) and wrapped is not None:
        return {"library": library, "class": type(wrapped).__name__, "adapter": type(part).__name__}
    return {"library": type(part).__module__.split(".")[0], "class": type(part).__name__}


def check_part_library(index: dict, part: str, name) -> None:
    """
    Raise a `ValueError` naming the fix when the part `index` records cannot be loaded from its folder alone: its
    library is not installed (what to install), or it is a `wrap_tokenizer` module (whose code the caller must pass).
    """
    record = index.get("parts", {}).get(part) or {}
    library = record.get("library")
    if record.get("adapter") == "WrappedTokenizer":
        raise ValueError(
            f"{name}: its `{part}/` holds the weights of a wrapped {record.get('class')} module, and a folder names no "
            f"code to run. Build the module and pass the tokenizer: LarpPipeline.from_pretrained(path, {part}="
            f"load_tokenizer(path + '/{part}', module=MyModule(...))), with encode=/decode= if they were not method "
            "names."
        )
    if library is None or library == "larp_hf":
        return
    # find_spec looks the name up without importing it: the name comes from a file of the folder.
    if not isinstance(library, str) or not library.isidentifier() or importlib.util.find_spec(library) is None:
        hint = INSTALL_HINTS.get(str(library), f"pip install {library}")
        raise ValueError(
            f"{name}: its `{part}/` holds a {library} {record.get('class', 'model')}, and {library} is not installed. "
            f"Install it ({hint}) and load the pipeline again."
        )


def write_pipeline_index(folder: Path, class_name: str, parts: dict, card_info: dict):
    """Write `larp_pipeline.json`: the pipeline class, its parts (`part_record` of each), the card info."""
    index = {
        "pipeline_class": class_name,
        "larp_hf_version": version("larp_hf"),
        "parts": {name: part_record(part) for name, part in parts.items()},
        "model_card": card_info,
        # Said here too, so that a folder whose manifest went missing is not taken for one saved before manifests.
        "manifest": MANIFEST_NAME,
    }
    write_json_atomic(folder / PIPELINE_CONFIG_NAME, index)


# ---- The manifest: what save_pretrained wrote, by size and SHA-256 -------------------------------------------------


def file_record(path: Path) -> dict:
    """`{"bytes": size, "sha256": hex digest}` of the file at `path` (read in 1 MiB blocks; a symlink is followed, as
    the Hub cache's snapshot folders are links into its blobs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def manifest_names(folder: Path, top_level: list[str]) -> list[str]:
    """The files a manifest lists: every file under the parts' sub-folders and the `top_level` files named."""
    names = [name for name in top_level if name not in UNLISTED_NAMES and (folder / name).is_file()]
    for part in PARTS:
        for root, _, files in os.walk(folder / part):
            names += [(Path(root) / file).relative_to(folder).as_posix() for file in files]
    return sorted(names)


def write_pipeline_manifest(folder: Path, top_level: list[str]) -> dict:
    """
    Write `larp_manifest.json`: the size and SHA-256 of every file under the parts' sub-folders and of the
    `top_level` files named (the card, `README.md`, is never listed). `LarpPipeline.save_pretrained` calls it last.
    """
    folder = Path(folder)
    files = {name: file_record(folder / name) for name in manifest_names(folder, top_level)}
    manifest = {"format": MANIFEST_FORMAT, "files": files}
    write_json_atomic(folder / MANIFEST_NAME, manifest)
    return manifest


def update_pipeline_manifest(folder: Path, names: list[str]):
    """Record the files `names` again in `folder`'s manifest (after rewriting them in place), when it has one."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return
    manifest = read_pipeline_manifest(folder, folder)
    for name in names:
        if name not in UNLISTED_NAMES:
            manifest["files"][name] = file_record(folder / name)
    write_json_atomic(path, manifest)


def read_pipeline_manifest(folder: Path, name) -> dict:
    """`folder`'s manifest, checked for form (`verify_pipeline_folder` checks the files)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"{name}: its {MANIFEST_NAME} cannot be read ({error}); download or copy the pipeline again."
        ) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    well_formed = (
        isinstance(files, dict)
        and manifest.get("format") == MANIFEST_FORMAT
        and all(
            isinstance(record, dict) and isinstance(record.get("bytes"), int) and isinstance(record.get("sha256"), str)
            for record in files.values()
        )
    )
    if not well_formed:
        raise ValueError(
            f"{name}: its {MANIFEST_NAME} is damaged (not a {MANIFEST_FORMAT} list of {{bytes, sha256}} records); "
            "download or copy the pipeline again."
        )
    return manifest


def verify_pipeline_folder(folder: Path, name=None) -> list[str]:
    """
    Check a pipeline folder against its `larp_manifest.json` before anything in it is loaded: every file it lists
    must be there with the recorded size and SHA-256, and the parts' sub-folders (`vqvae/`, `prior/`,
    `image_processor/`, which the loaders read) must hold no other file. One `ValueError` names every damaged,
    missing or unlisted file. Files beside the parts that the manifest does not list (the card `README.md`, a Hub
    repo's `.gitattributes`, reports written into the folder) are never read by loading and are left alone.

    A folder saved before pipelines had manifests (none there, and its `larp_pipeline.json` names none) is loaded
    with a warning that nothing was verified; one whose `larp_pipeline.json` names a manifest that is not there is
    refused. Returns the files checked.
    """
    folder = Path(folder)
    name = folder if name is None else name
    if not (folder / MANIFEST_NAME).is_file():
        try:
            index = json.loads((folder / PIPELINE_CONFIG_NAME).read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            index = None
        if not isinstance(index, dict) or MANIFEST_NAME == index.get("manifest"):
            raise ValueError(
                f"{name} has no {MANIFEST_NAME}, though its {PIPELINE_CONFIG_NAME} says it was saved with one (or "
                "cannot be read): download or copy the whole pipeline folder again. If you removed it on purpose, "
                "load it with `verify=False`, or load it that way once and save it again (save_pretrained)."
            )
        logger.warning(
            "%s has no %s (saved before pipeline folders carried one): its files are loaded unverified. Save the "
            "pipeline again (LarpPipeline.save_pretrained) to give it one.", name, MANIFEST_NAME,
        )  # fmt: skip
        return []
    manifest = read_pipeline_manifest(folder, name)
    problems = []
    for listed, record in sorted(manifest["files"].items()):
        path = folder / listed
        if Path(listed).is_absolute() or ".." in Path(listed).parts:
            problems.append(f"{listed}: a name outside the folder")
        elif not path.is_file():
            problems.append(f"{listed}: missing")
        elif path.stat().st_size != record["bytes"]:
            size = path.stat().st_size
            problems.append(f"{listed}: damaged ({size} bytes where the manifest records {record['bytes']})")
        elif file_record(path)["sha256"] != record["sha256"]:
            problems.append(f"{listed}: damaged (its SHA-256 differs from the one the manifest records)")
    unlisted = sorted(set(manifest_names(folder, [])) - set(manifest["files"]))
    problems += [f"{extra}: not in the manifest (a file added to a part's folder)" for extra in unlisted]
    if problems:
        raise ValueError(
            f"{name} does not match its {MANIFEST_NAME}:\n  " + "\n  ".join(problems) + "\nDownload or copy the "
            "pipeline again. If you changed these files on purpose, load it with `verify=False`, or load it that way "
            "once and save it again (save_pretrained), which records the files anew."
        )
    return sorted(manifest["files"])


@contextlib.contextmanager
def swap_pipeline_folder(target: Path, overwrite: bool = False):
    """
    Yield an empty folder beside `target` to write a pipeline into; on success it takes `target`'s place whole
    (`larp_hf.atomic_files.swap_folder`: the old folder is renamed aside, the new one renamed in, the old one
    removed), and a failure leaves `target` as it was. A pipeline folder is replaced, keeping the entries that no save
    wrote (its mark, `SAVE_COMMAND`, lists what one did); a non-empty `target` that is not a pipeline folder is
    refused unless `overwrite`.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file, not a folder; pick another place for the pipeline.")
    replace = overwrite or is_pipeline_folder(target)
    if not replace and target.is_dir() and any(target.iterdir()):
        raise ValueError(
            f"{target} is not empty and holds no pipeline; pick another folder or pass overwrite=True to replace it."
        )
    with swap_folder(target, replace=replace, keep=_not_written_by_a_save) as partial:
        yield partial
        write_mark(partial, SAVE_COMMAND, os.listdir(partial))


SAVE_COMMAND = "LarpPipeline.save_pretrained"  # the mark (`larp_hf.output_folders`) of a saved pipeline folder


def _not_written_by_a_save(folder: Path) -> list[str]:
    """The entries of a pipeline folder that a save did not write (reports, a user's notes): a re-save keeps them."""
    written = entries_written_by(folder, SAVE_COMMAND)
    if not written:  # a folder saved before saves were marked: what a save writes
        written = {*PARTS, PIPELINE_CONFIG_NAME, "README.md", SAMPLE_GRID_NAME}
        code_copies = (path.name for part in PARTS for path in (folder / part).glob("*.py"))
        written |= {name for name in code_copies if (folder / name).exists()}
    return [name for name in folder_entries(folder) if name not in written]


__all__ = [
    "INSTALL_HINTS",
    "MANIFEST_NAME",
    "PARTS",
    "PIPELINE_CONFIG_NAME",
    "check_part_library",
    "file_record",
    "is_pipeline_folder",
    "load_part",
    "part_record",
    "read_pipeline_index",
    "read_pipeline_manifest",
    "swap_pipeline_folder",
    "update_pipeline_manifest",
    "verify_pipeline_folder",
    "write_pipeline_index",
    "write_pipeline_manifest",
]
