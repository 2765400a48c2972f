"""
What a command may write where, one rule for every command that writes:

- an output never is, contains or lies inside one of the command's inputs (`output_overlap`): writing there, and
  replacing it with `overwrite`, would destroy what the command reads;
- a folder a command writes carries a mark, `OUTPUT_MARK`, that names the command and the entries it wrote
  (`write_mark`), so that `overwrite` removes only what an earlier run of the same command wrote
  (`entries_written_by`) and a user's own files there are kept, or refused by name when they are in the way;
- an output folder is claimed for the command's life before any work (`claim_folder`), so that a second command
  writing there is refused at once instead of mixing its files with the first one's;
- a folder copied for publishing holds no link out of it (`links_out_of`).
"""

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .atomic_files import write_json_atomic


OUTPUT_MARK = ".larp_hf-output.json"  # in a folder a command wrote: {"command": ..., "entries": [...]}
CLAIM_FILE = ".larp_hf-output.lock"  # in a folder a command is writing, for the command's life
# What a command's own bookkeeping adds to its folder: never the user's, never in the way.
BOOKKEEPING = (OUTPUT_MARK, CLAIM_FILE)


def how_paths_meet(first: str | os.PathLike, second: str | os.PathLike) -> str | None:
    """How the place `first` meets `second`: "is", "contains", "lies inside", or None when they are apart (links
    followed, so a link to a folder is that folder; neither needs to exist)."""
    first, second = Path(first).expanduser().resolve(), Path(second).expanduser().resolve()
    if first == second:
        return "is"
    if second.is_relative_to(first):
        return "contains"
    if first.is_relative_to(second):
        return "lies inside"
    return None


def output_overlap(
    output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None], output_name: str = "--output_dir"
) -> str | None:
    """
    The refusal for an output (folder or file) that is, contains or lies inside one of `inputs` (what a command reads,
    by the name the user gave it: a flag, an argument), or None. A command writes into its output and replacing it
    deletes it, so an input there would be destroyed by the very command that reads it. Only inputs that exist on
    this machine count (a Hub id is not a folder here); links are followed, so a link to an input is that input.
    """
    for name, value in inputs.items():
        if value is None or not Path(value).expanduser().exists():
            continue
        relation = how_paths_meet(output, value)
        if relation is None:
            continue
        return (
            f"{output_name} {output} {relation} {name} {value}: the command would write into, and when it replaces "
            f"its output delete, what it reads. Choose an {output_name} apart from its inputs."
        )
    return None


def read_mark(folder: str | os.PathLike) -> dict | None:
    """The mark a command left in `folder` (`write_mark`), or None when there is none or it cannot be read."""
    path = Path(folder) / OUTPUT_MARK
    if path.is_symlink() or not path.is_file():
        return None
    try:
        mark = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return mark if isinstance(mark, dict) and isinstance(mark.get("entries"), list) else None


def write_mark(folder: str | os.PathLike, command: str, entries: Iterable[str], **details):
    """Record in `folder` that `command` wrote its top-level `entries` (names), and `details` (JSON values) of what
    else it wrote, whole or not at all."""
    names = sorted({str(name) for name in entries} - set(BOOKKEEPING))
    write_json_atomic(Path(folder) / OUTPUT_MARK, {"command": command, "entries": names, **details})


def entries_written_by(folder: str | os.PathLike, command: str) -> set[str]:
    """The top-level entries of `folder` that an earlier run of `command` wrote there, by its mark (none without)."""
    mark = read_mark(folder)
    if mark is None or mark.get("command") != command:
        return set()
    entries = (name for name in mark["entries"] if isinstance(name, str))
    return {name for name in entries if "/" not in name and name not in ("", ".", "..")}


def folder_entries(folder: str | os.PathLike) -> list[str]:
    """The names in `folder` (none when it does not exist), leaving out the commands' bookkeeping files."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(name for name in os.listdir(folder) if name not in BOOKKEEPING)


def names_list(names: Iterable[str], limit: int = 5) -> str:
    """`a, b, c` or `a, b, c, d, e and 3 more`: the names a refusal shows."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def remove_entry(path: Path):
    """Remove one entry of a folder: a link itself (never what it points at), a file, or a folder tree."""
    import shutil

    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


class FolderClaim:
    """A command's claim on an output folder (`claim_folder`); `release()` gives it back (also at interpreter exit)."""

    def __init__(self, lock):
        self._lock = lock

    def release(self):
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def claim_folder(folder: str | os.PathLike, output_name: str) -> FolderClaim:
    """
    Make `folder` (created if missing) this command's until `release()`: an exclusive lock on its `CLAIM_FILE`, which
    the kernel drops when the process dies however it dies. A folder another live command holds is refused at once
    (`ValueError` naming `output_name`, the folder and the holder), before any work.
    """
    from .training.run_lock import OutputDirBusyError, RunLock

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"`{output_name}` {folder} is a file, not a folder; pick another `{output_name}`.")
    folder.mkdir(parents=True, exist_ok=True)
    lock = RunLock(folder)
    lock.path = folder / CLAIM_FILE
    try:
        lock.acquire()  # a stale claim of a command that died is taken over silently: nothing of it is lost
    except OutputDirBusyError as busy:
        raise ValueError(f"`{output_name}`: {busy}") from None
    return FolderClaim(lock)


def links_out_of(folder: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """
    The links in `folder` (at any depth) that lead out of `root` (default: `folder` itself), dangling ones included,
    and links to a folder that holds them (a copy that follows it never ends), each with where it points.
    """
    folder = Path(folder)
    root = Path(root if root is not None else folder).resolve()
    found = []
    for parent, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            path = Path(parent) / name
            if not path.is_symlink():
                continue
            target = path.resolve()
            loops = target.is_dir() and path.parent.resolve().is_relative_to(target)
            if loops or not target.is_relative_to(root) or not target.exists():
                found.append((path, os.readlink(path)))
    return found


__all__ = [
    "BOOKKEEPING",
    "CLAIM_FILE",
    "OUTPUT_MARK",
    "FolderClaim",
    "claim_folder",
    "entries_written_by",
    "folder_entries",
    "how_paths_meet",
    "links_out_of",
    "names_list",
    "output_overlap",
    "read_mark",
    "remove_entry",
    "write_mark",
]
