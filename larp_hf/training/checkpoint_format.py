"""
The on-disk format of a training checkpoint and the rules that make it trustworthy: state files, weights, the
manifest and its verification, listing, lineage and recovery. No Accelerator here: who writes, who waits and what is
gathered (saving and resuming) is `checkpoints.py`, beside this file.

A checkpoint is a folder `checkpoint-STEP` of state files plus `manifest.json`, written last:

    {
      "format": "larp-hf-checkpoint/1",
      "step": 4,
      "world_size": 2,
      "config_sha256": "9c1f…",                        # of the run's settings (run_config.json holds them)
      "lineage": [{"run": "3f2a9c1e0b7d", "from_step": 0},  # the runs that led here: each resumed the one
                  {"run": "a81c44d09e2f", "from_step": 2}], # before it from checkpoint-from_step
      "files": {"model.safetensors": {"bytes": 41872, "sha256": "5e0b…"}, …}
    }

State files execute nothing when read: tensors go to safetensors files (the structure around them, such as an
optimizer's param_groups, rides along as JSON in the safetensors header), everything else to JSON. A checkpoint is
trusted only after every file it lists has the size and SHA-256 its manifest records. The manifest is the only list
of what resuming reads (`CheckpointReader`): a state is read from the file the manifest lists for it, checked again
as it is read and parsed from the very bytes that were checked; a file it does not list (a planted
`custom_checkpoint_0.pkl`, an `optimizer.json` beside the listed `optimizer.safetensors`) is never opened, and a file
resuming needs that it does not list is an error naming the file.

Atomicity (`larp_hf.atomic_files`): a checkpoint is written under `.tmp-checkpoint-STEP` and renamed into place
once its manifest is written. One that replaces an older `checkpoint-STEP` (a resumed run saving a step again) first
renames the old one to `.old-checkpoint-STEP`, and removes it only after the new one is in place; pruned checkpoints
are renamed to `.deleting-*` before they are removed. The partial folder has a fixed name, not a unique one, because
every process writes its random state into it; the run lock keeps a second run out. `recover_checkpoints_dir`
finishes or undoes whatever a crash interrupted.

Lineage: OUTPUT_DIR/run.json names the lineage of the run that owns the folder. `latest` is the newest checkpoint
of that lineage; a checkpoint written by an earlier run after the step the current run resumed from is on an
abandoned branch and is never picked (it stays on disk, and can still be resumed by its path).
"""

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from ..atomic_files import (
    ASIDE_PREFIX,
    DELETING_PREFIX,
    PARTIAL_PREFIX,
    install_folder,
    remove_folder,
    write_bytes_atomic,
    write_json_atomic,
)
from .fault_injection import fault_point


FORMAT = "larp-hf-checkpoint/1"
MANIFEST_FILE = "manifest.json"
RUN_FILE = "run.json"  # in OUTPUT_DIR: the lineage of the run that owns the folder
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_METADATA_KEY = "larp_hf_state"  # safetensors header entry holding a state file's JSON structure
ALIASES_METADATA_KEY = "larp_hf_aliases"  # model.safetensors header entry: tied names dropped -> the name kept
_LEGACY_PICKLES = ("random_states_0.pkl", "custom_checkpoint_0.pkl", "optimizer.bin", "scheduler.bin")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted or found; the message names the folder and the file."""


# ---- State files: JSON and safetensors, nothing pickled ----------------------------------------------------------


def _encode(value, tensors: dict, key: str):
    """`value` as JSON, its tensors moved into `tensors` under path-like keys. Tuples and non-string keys are tagged."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        raise TypeError(f"{key}: a NumPy array; convert it to a tensor before checkpointing it.")
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item, tensors, f"{key}/{i}") for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(item, tensors, f"{key}/{i}") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(name, str) and not name.startswith("__") for name in value):
            return {name: _encode(item, tensors, f"{key}/{name}") for name, item in value.items()}
        return {
            "__items__": [
                [_encode(name, tensors, f"{key}/{i}k"), _encode(item, tensors, f"{key}/{i}")]
                for i, (name, item) in enumerate(value.items())
            ]
        }
    raise TypeError(f"{key}: cannot checkpoint a {type(value).__name__} without pickling it.")


def _decode(value, tensors: dict):
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(_decode(item, tensors) for item in value["__tuple__"])
    if "__items__" in value:
        return {_decode(name, tensors): _decode(item, tensors) for name, item in value["__items__"]}
    return {name: _decode(item, tensors) for name, item in value.items()}


def write_state(folder: Path, stem: str, state) -> str:
    """
    Write a state (nested dicts, lists, tuples, numbers, strings and tensors) as `stem.json`, or as
    `stem.safetensors` when it holds tensors. Returns the file name.
    """
    tensors = {}
    structure = json.dumps(_encode(state, tensors, stem))
    if not tensors:
        name = f"{stem}.json"
        write_bytes_atomic(folder / name, structure.encode())
    else:
        name = f"{stem}.safetensors"
        save_file(tensors, str(folder / name), metadata={STATE_METADATA_KEY: structure})
    return name


def read_state(folder: Path, stem: str):
    """
    Read what `write_state` wrote as `stem` in `folder`, unverified (resuming reads through `CheckpointReader`, which
    checks the manifest): `stem.json`, or `stem.safetensors` placed back into its structure. Both present is refused:
    which one was written cannot be told.
    """
    names = [name for name in (f"{stem}.json", f"{stem}.safetensors") if (folder / name).exists()]
    if not names:
        raise CheckpointError(f"{folder} has no {stem}.json or {stem}.safetensors.")
    if len(names) == 2:
        raise CheckpointError(f"{folder} has both {names[0]} and {names[1]}: one of them was not written by a save.")
    return _parse_state(folder / names[0], (folder / names[0]).read_bytes())


def _parse_state(path: Path, data: bytes):
    """A state file's bytes as `write_state` wrote them to `path` (JSON, or safetensors with its structure inside)."""
    try:
        if path.suffix == ".json":
            return _decode(json.loads(data), {})
        tensors, metadata = _parse_safetensors(data)
        return _decode(json.loads(metadata[STATE_METADATA_KEY]), tensors)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise CheckpointError(f"{path} cannot be read as a state file: {error}") from None


def _parse_safetensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the header metadata of a safetensors file held in memory."""
    # The format: an 8-byte little-endian header length, then the JSON header, whose `__metadata__` holds strings.
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    return load_safetensors(data), header.get("__metadata__") or {}


def write_weights(path: Path, state_dict: dict[str, torch.Tensor]):
    """
    A model's state dict as a plain safetensors file (loadable by `safetensors.torch.load_file`). Tensors that share
    storage (tied embeddings) are written once; the header records which names were dropped for which.
    """
    kept, aliases, seen = {}, {}, {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach()
        identity = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() > 0 and identity in seen:
            aliases[name] = seen[identity]
            continue
        seen[identity] = name
        kept[name] = tensor.cpu().contiguous()
    save_file(kept, str(path), metadata={"format": "pt", ALIASES_METADATA_KEY: json.dumps(aliases)})


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """What `write_weights` wrote, tied names restored (unverified: resuming reads through `CheckpointReader`)."""
    return _weights_from(path, path.read_bytes())


def _weights_from(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    try:
        state_dict, metadata = _parse_safetensors(data)
        aliases = json.loads(metadata.get(ALIASES_METADATA_KEY, "{}"))
        for name, kept in aliases.items():
            state_dict[name] = state_dict[kept]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise CheckpointError(f"{path} cannot be read as weights: {error}") from None
    return state_dict


# ---- The manifest ------------------------------------------------------------------------------------------------


def _file_record(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        os.fsync(handle.fileno())  # the bytes hashed are the bytes on disk before the manifest vouches for them
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def config_sha256(config: dict) -> str:
    """The SHA-256 of a run's settings as the manifest records it (keys sorted, so the order does not count)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def write_manifest(folder: Path, step: int, lineage: list[dict], config_hash: str, world_size: int) -> dict:
    """Record every file in `folder` with its size and SHA-256, then write manifest.json: the checkpoint is complete."""
    files = {
        path.relative_to(folder).as_posix(): _file_record(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    manifest = {
        "format": FORMAT,
        "step": step,
        "world_size": world_size,
        "config_sha256": config_hash,
        "lineage": lineage,
        "files": files,
    }
    write_json_atomic(folder / MANIFEST_FILE, manifest)  # synced, and its folder with it
    return manifest


def read_manifest(folder: Path) -> dict:
    """The manifest of `folder`, checked for form only (`verify_checkpoint` checks the files)."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        legacy = [name for name in _LEGACY_PICKLES if (folder / name).exists()]
        if legacy:
            raise CheckpointError(
                f"{folder} was written by an older larp_hf: it holds pickled state ({', '.join(legacy)}), which "
                "resuming no longer loads because unpickling can run code. Start the run afresh."
            )
        raise CheckpointError(f"{folder} has no {MANIFEST_FILE}: its save never finished.")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is damaged: it is not JSON ({error}).") from None
    required = ("step", "world_size", "config_sha256", "lineage", "files")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or any(key not in manifest for key in required):
        raise CheckpointError(f"{path} is not a {FORMAT} manifest.")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(record, dict)
        and type(record.get("bytes")) is int
        and isinstance(record.get("sha256"), str)
        for record in files.values()
    ):
        raise CheckpointError(f"{path} is damaged: its `files` are not all {{name: {{bytes, sha256}}}} records.")
    return manifest


def _listed_path(folder: Path, name: str) -> Path:
    """The path of a file the manifest lists, refused where the name would lead outside the checkpoint."""
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{folder / MANIFEST_FILE} lists {name!r}, which is not inside the checkpoint.")
    return folder / name


def _check_record(path: Path, record: dict, size: int, sha256: str | None):
    if size != record["bytes"]:
        raise CheckpointError(f"{path} is damaged: {size} bytes where the manifest records {record['bytes']}.")
    if sha256 != record["sha256"]:
        raise CheckpointError(f"{path} is damaged: its SHA-256 differs from the one in the manifest.")


def verify_checkpoint(folder: Path) -> tuple[dict, list[str]]:
    """
    Check every file the manifest lists against its size and SHA-256. Returns the manifest and the files present that
    it does not list (never read); raises CheckpointError naming the first missing, truncated or altered file.
    """
    manifest = read_manifest(folder)
    for name, record in manifest["files"].items():
        path = _listed_path(folder, name)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the checkpoint is incomplete.")
        size = path.stat().st_size
        # A file of the wrong size is told without hashing it.
        _check_record(path, record, size, _file_record(path)["sha256"] if size == record["bytes"] else None)
    return manifest, unlisted_files(folder, manifest)


def unlisted_files(folder: Path, manifest: dict) -> list[str]:
    """The files in `folder` that `manifest` does not list: resuming never reads them."""
    listed = set(manifest["files"]) | {MANIFEST_FILE}
    present = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return [name for name in present if name not in listed]


class CheckpointReader:
    """
    The files of one checkpoint, read only as its manifest lists them: how resuming reads a checkpoint, everything
    (weights, optimizer, schedule, scaler, random states, training state and history, settings) through one door.
    A name the manifest does not list is never opened; a file is read whole, checked against the size and SHA-256 the
    manifest records, and parsed from the bytes that were checked. Errors are CheckpointError naming the file.

        reader = CheckpointReader(folder)
        if reader.lists_state("scaler"):
            scaler.load_state_dict(reader.read_state("scaler"))
    """

    def __init__(self, folder: Path, manifest: dict | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder) if manifest is None else manifest
        self.files = self.manifest["files"]

    def state_file(self, stem: str) -> str | None:
        """The file the manifest lists for the state `stem` (`stem.json` or `stem.safetensors`), None if neither."""
        names = [name for name in (f"{stem}.json", f"{stem}.safetensors") if name in self.files]
        if len(names) == 2:
            raise CheckpointError(
                f"{self.folder / MANIFEST_FILE} lists both {names[0]} and {names[1]}: a save writes one of them, so "
                "the manifest was edited. Restore the manifest the save wrote, or resume from another checkpoint."
            )
        return names[0] if names else None

    def lists_state(self, stem: str) -> bool:
        return self.state_file(stem) is not None

    def require(self, name: str, hint: str = "") -> str:
        """`name` if the manifest lists it; else CheckpointError naming the file, the fix and `hint`."""
        if name not in self.files:
            self._missing(name, hint)
        return name

    def require_state(self, stem: str, hint: str = "") -> str:
        """The listed file of the state `stem`; else CheckpointError naming it, the fix and `hint`."""
        name = self.state_file(stem)
        if name is None:
            self._missing(f"{stem}.json or {stem}.safetensors", hint)
        return name

    def _missing(self, what: str, hint: str):
        raise CheckpointError(
            f"{self.folder / MANIFEST_FILE} does not list {what}, which resuming needs.{hint} The manifest is the "
            "only list of what a checkpoint holds, and files it does not list are never read: restore the manifest "
            "the save wrote, or resume from another checkpoint."
        )

    def read_bytes(self, name: str) -> bytes:
        """The bytes of the listed file `name`, checked against the manifest's size and SHA-256."""
        self.require(name)
        path = _listed_path(self.folder, name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path} is missing: the checkpoint is incomplete.") from None
        except (IsADirectoryError, PermissionError) as error:
            raise CheckpointError(f"{path} cannot be read: {error}") from None
        _check_record(path, self.files[name], len(data), hashlib.sha256(data).hexdigest())
        return data

    def read_state(self, stem: str):
        """The state `write_state` wrote as `stem`, from the file the manifest lists for it."""
        name = self.require_state(stem)
        return _parse_state(self.folder / name, self.read_bytes(name))

    def read_weights(self, name: str) -> dict[str, torch.Tensor]:
        """The weights `write_weights` wrote as `name` (tied names restored), verified."""
        return _weights_from(self.folder / name, self.read_bytes(name))

    def verify_folder(self, subfolder: str):
        """
        For a library that reads a sub-folder itself (DeepSpeed's partitions): every file in it is listed and intact,
        so that what it opens is what the save wrote.
        """
        prefix = f"{subfolder}/"
        listed = [name for name in self.files if name.startswith(prefix)]
        if not listed:
            self._missing(f"any file under {prefix}", "")
        unlisted = [name for name in unlisted_files(self.folder, self.manifest) if name.startswith(prefix)]
        if unlisted:
            raise CheckpointError(
                f"{self.folder / unlisted[0]} is not in the manifest, but the library that reads {subfolder}/ would "
                "open it. Remove it, or resume from another checkpoint."
            )
        for name in listed:
            self.read_bytes(name)


# ---- Lineage and `latest` ----------------------------------------------------------------------------------------


def new_run_id() -> str:
    """A fresh id for a run's entry in a lineage."""
    return uuid.uuid4().hex[:12]


def on_lineage(head: list[dict], lineage: list[dict], step: int) -> bool:
    """Whether a checkpoint of `step` written by `lineage` lies on the line that led to the run `head`."""
    if head[: len(lineage)] != lineage:
        return False
    # Written by an earlier run of the line: only up to the step the next run resumed from.
    return len(lineage) == len(head) or step <= head[len(lineage)]["from_step"]


def read_head(output_dir: Path) -> list[dict] | None:
    """The lineage of the run that owns `output_dir` (OUTPUT_DIR/run.json), or None where it has none."""
    path = output_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["lineage"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{path} is damaged; delete it to let `latest` consider every checkpoint.") from None


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """The complete-looking `checkpoint-STEP` folders, newest first (`.tmp-`, `.old-` and `.deleting-` never count)."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def lineage_checkpoints(checkpoints_dir: Path, head: list[dict] | None) -> list[Path]:
    """The checkpoints with a manifest on `head`'s lineage (all of them when `head` is None), newest first."""
    ours = []
    for _, folder in list_checkpoints(checkpoints_dir):
        try:
            manifest = read_manifest(folder)
        except CheckpointError:
            continue
        if head is None or on_lineage(head, manifest["lineage"], manifest["step"]):
            ours.append(folder)
    return ours


def find_checkpoint(resume_from_checkpoint: str, checkpoints_dir: Path) -> tuple[Path, dict, list[str]]:
    """
    Resolve and verify `resume_from_checkpoint`: a checkpoint folder; `latest`, the newest checkpoint of the folder's
    lineage, refused if it or any newer `checkpoint-*` folder is damaged; or `latest_intact`, which passes over
    damaged ones to the newest that verifies. Returns the folder, its manifest and notes for the user (what was passed
    over and why); raises CheckpointError naming the folder and the file.
    """
    if resume_from_checkpoint not in ("latest", "latest_intact"):
        folder = Path(resume_from_checkpoint)
        if not folder.is_dir():
            raise CheckpointError(f"No checkpoint to resume from at {resume_from_checkpoint!r}: no such folder.")
        manifest, unlisted = verify_checkpoint(folder)
        return folder, manifest, _unlisted_notes(folder, unlisted)
    head = read_head(checkpoints_dir.parent)
    notes = []
    for _, folder in list_checkpoints(checkpoints_dir):
        try:
            manifest = read_manifest(folder)
            if head is not None and not on_lineage(head, manifest["lineage"], manifest["step"]):
                notes.append(f"passed over {folder.name}: on an abandoned branch (a later run resumed from before it).")
                continue
            manifest, unlisted = verify_checkpoint(folder)
        except CheckpointError as error:
            if resume_from_checkpoint == "latest":
                raise CheckpointError(
                    f"{error} Refusing to resume from it. Pass resume_from_checkpoint='latest_intact' to fall back "
                    f"to the newest intact checkpoint, or delete {folder}."
                ) from None
            notes.append(f"passed over {folder.name}: {error}")
            continue
        return folder, manifest, notes + _unlisted_notes(folder, unlisted)
    reasons = "".join(f"\n  {note}" for note in notes)
    raise CheckpointError(f"No checkpoint to resume from at {resume_from_checkpoint!r} in {checkpoints_dir}.{reasons}")


def _unlisted_notes(folder: Path, unlisted: list[str]) -> list[str]:
    return [f"ignored {folder / name}: not in the manifest, never read" for name in unlisted]


# ---- Installing, pruning, recovering -----------------------------------------------------------------------------


def partial_checkpoint_path(checkpoints_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` is written before `install_checkpoint` renames it into place."""
    return checkpoints_dir / f"{PARTIAL_PREFIX}checkpoint-{step}"


def install_checkpoint(partial: Path, final: Path):
    """
    Put the complete checkpoint `partial` at `final` (`larp_hf.atomic_files.install_folder`): an older `final` is
    renamed aside to `.old-checkpoint-STEP` and removed only after the new one is in place.
    """
    install_folder(partial, final, on_step=lambda step: fault_point(f"checkpoint.{step}"))


def prune_checkpoints(checkpoints_dir: Path, head: list[dict], keep: int):
    """Remove all but the newest `keep` checkpoints of `head`'s lineage (others, such as abandoned ones, stay)."""
    for folder in lineage_checkpoints(checkpoints_dir, head)[keep:]:
        remove_folder(folder, on_step=lambda step: fault_point("checkpoint.pruning"))


def recover_checkpoints_dir(checkpoints_dir: Path) -> list[str]:
    """
    Finish or undo what a crash interrupted: half-written `.tmp-*` and half-removed `.deleting-*` folders go; an
    `.old-checkpoint-STEP` is removed when its replacement is in place and renamed back when it is not. Returns what
    was done, for the log.
    """
    done = []
    if not checkpoints_dir.is_dir():
        return done
    for path in sorted(checkpoints_dir.iterdir()):
        if path.name.startswith((PARTIAL_PREFIX, DELETING_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed the interrupted {path.name}")
        elif path.name.startswith(ASIDE_PREFIX):
            final = path.with_name(path.name[len(ASIDE_PREFIX) :])
            if final.exists():
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path.name}, already replaced by {final.name}")
            else:
                os.replace(path, final)
                done.append(f"restored {final.name}, whose replacement never finished")
    return done


__all__ = [
    "FORMAT",
    "MANIFEST_FILE",
    "RUN_FILE",
    "CheckpointError",
    "CheckpointReader",
    "config_sha256",
    "find_checkpoint",
    "install_checkpoint",
    "lineage_checkpoints",
    "list_checkpoints",
    "new_run_id",
    "on_lineage",
    "partial_checkpoint_path",
    "prune_checkpoints",
    "read_head",
    "read_manifest",
    "read_state",
    "read_weights",
    "recover_checkpoints_dir",
    "unlisted_files",
    "verify_checkpoint",
    "write_manifest",
    "write_state",
    "write_weights",
]
