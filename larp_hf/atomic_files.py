"""
Write it whole or not at all: files and folders that readers, and a restart after a crash or a power cut, see
either as they were or as they were meant to be, never half written.

- A file goes through `open_atomic` (or `write_bytes_atomic`, `write_text_atomic`, `write_json_atomic`): it is
  written under a unique temporary name in its own folder (two writers never share one), synced, renamed over the
  target, and the folder synced; a failure removes the temporary file and leaves the target as it was.
- A folder goes through `swap_folder`: it is written as a fresh `.tmp-NAME-*` partial folder beside the target, and
  `install_folder` renames an existing target aside to `.old-NAME-*`, renames the partial into place, syncs the
  parent and only then removes the old folder. A crash leaves the old folder at the target or beside it, whole.
  What the writer did not write there (`keep`) is carried into the new folder by hard links (`link_tree`) first.
- A folder is removed by `remove_folder`: renamed to `.deleting-NAME` first, so that no half-deleted folder is ever
  found under its own name.

Recovery of what a crash left (`.tmp-*`, `.old-*`, `.deleting-*`) belongs to whoever owns the folder and knows that
no other writer is at work in it: the checkpoints' (`larp_hf.training.checkpoint_format.recover_checkpoints_dir`)
and the replaced run's (`larp_hf.training.claim_output_dir`) under the run lock.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


PARTIAL_PREFIX = ".tmp-"  # a folder being written, not yet in place
ASIDE_PREFIX = ".old-"  # a folder replaced, removed once its replacement is in place
DELETING_PREFIX = ".deleting-"  # a folder being removed


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# tempfile makes files 0600 and folders 0700; what it makes here ends up in place of an ordinary file or folder,
# so it gets the permissions `open` and `mkdir` would have given.
_UMASK = _read_umask()


def fsync_folder(folder: str | os.PathLike):
    """Make the renames inside `folder` durable (a rename is only on disk once its folder is synced)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_file(path: str | os.PathLike):
    """Make the bytes of the file at `path` durable."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def commit_file(source: str | os.PathLike, path: str | os.PathLike):
    """
    Move the finished file `source` over `path` (in the same file system) so that `path` is, at every moment and
    after a crash, either its old file or the new one whole: sync the bytes, rename, sync the folder.
    """
    fsync_file(source)
    os.replace(source, path)
    fsync_folder(Path(path).parent)


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator:
    """
    Open a file to write that replaces `path` when the block ends without an error; until then readers see the old
    file. It is written under a unique name in `path`'s folder (`tempfile.mkstemp`, so concurrent writers never share
    one) and moved in by `commit_file`; on an error the temporary file is removed and the error raised.

        with open_atomic(path) as handle:
            torch.save(features, handle)
    """
    if not mode.startswith("w"):
        raise ValueError(f"open_atomic writes a new file: mode must start with 'w', got {mode!r}.")
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, 0o666 & ~_UMASK)
        handle = os.fdopen(descriptor, mode, **open_kwargs)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(descriptor)  # unless `open` closed it already, as it does when a text option fails
        os.unlink(temporary)
        raise
    try:
        with handle:
            yield handle
        commit_file(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes):
    """Write `data` to `path` whole or not at all (`open_atomic`)."""
    with open_atomic(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8"):
    """Write `text` to `path` whole or not at all (`open_atomic`)."""
    write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike, payload):
    """Write `payload` as indented JSON to `path` whole or not at all (`open_atomic`)."""
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def new_partial_folder(target: str | os.PathLike) -> Path:
    """A fresh, uniquely named, empty `.tmp-NAME-*` folder beside `target` (its parent is made if missing)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{target.name}-", dir=target.parent))
    partial.chmod(0o777 & ~_UMASK)
    return partial


def _refuse_to_replace(target: Path):
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not empty; it is not replaced.")


def install_folder(
    partial: str | os.PathLike,
    target: str | os.PathLike,
    replace: bool = True,
    on_step: Callable[[str], None] | None = None,
):
    """
    Put the complete folder `partial` (a `.tmp-*` folder beside `target`) at `target`. Its files are synced; an
    existing `target` is renamed aside to `.old-*` (the partial's name with `.old-` for `.tmp-`), the partial renamed
    into place, the parent synced, and only then the old folder removed. With `replace=False` an existing non-empty
    `target` is refused (FileExistsError) and nothing moves. `on_step(name)` is called after the steps
    `"old-moved-aside"` and `"installed"` (tests kill the process there).
    """
    partial, target = Path(partial), Path(target)
    if not partial.name.startswith(PARTIAL_PREFIX) or partial.parent != target.parent:
        raise ValueError(f"{partial} is not a {PARTIAL_PREFIX}* folder beside {target}.")
    if not replace:
        _refuse_to_replace(target)
    for path in partial.rglob("*"):
        if path.is_symlink():
            continue  # a link's target is not the folder's to sync (or even to open)
        if path.is_file():
            fsync_file(path)
        elif path.is_dir():
            fsync_folder(path)
    fsync_folder(partial)
    old = target.with_name(ASIDE_PREFIX + partial.name[len(PARTIAL_PREFIX) :])
    moved_aside = False
    try:
        if target.exists():
            os.replace(target, old)
            moved_aside = True
            if on_step is not None:
                on_step("old-moved-aside")
        os.replace(partial, target)
    except BaseException:
        if moved_aside:
            os.replace(old, target)  # the old folder goes back rather than leave nothing at the target
        raise
    fsync_folder(target.parent)
    if on_step is not None:
        on_step("installed")
    shutil.rmtree(old, ignore_errors=True)


def link_tree(source: str | os.PathLike, destination: str | os.PathLike):
    """
    Put a copy of the file or folder `source` at `destination` (in the same file system) that costs no space and
    leaves `source` as it is: files are hard-linked (copied where the file system cannot link), links recreated as
    links (never followed), folders made anew with their permissions.
    """
    source, destination = Path(source), Path(destination)
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
    elif source.is_dir():
        destination.mkdir()
        shutil.copymode(source, destination)
        for child in source.iterdir():
            link_tree(child, destination / child.name)
    else:
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)


@contextlib.contextmanager
def swap_folder(
    target: str | os.PathLike,
    replace: bool = True,
    on_step: Callable[[str], None] | None = None,
    keep: Callable[[Path], Iterable[str]] | None = None,
) -> Iterator[Path]:
    """
    Yield a fresh empty folder beside `target` to write into (`new_partial_folder`); when the block ends without an
    error it takes `target`'s place (`install_folder`, with its `replace` and `on_step`). On an error the partial
    folder is removed and `target` left as it was. With `replace=False` a non-empty `target` is refused
    (FileExistsError) before the block runs and again before the swap.

    `keep(target)` names entries of the existing `target` that the new folder keeps (what the writer did not write
    there: a user's notes, reports): each is carried over by `link_tree` before the swap, unless the new folder
    has an entry of that name, so the old folder still holds them all until the new one is in place.

        with swap_folder(output_dir) as folder:
            dataset.save_to_disk(folder)
    """
    target = Path(target)
    if not replace:
        _refuse_to_replace(target)
    partial = new_partial_folder(target)
    try:
        yield partial
        if keep is not None and target.is_dir():
            for name in keep(target):
                if (target / name).exists() or (target / name).is_symlink():
                    if not ((partial / name).exists() or (partial / name).is_symlink()):
                        link_tree(target / name, partial / name)
        install_folder(partial, target, replace=replace, on_step=on_step)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def remove_swap_leftovers(target: str | os.PathLike) -> list[str]:
    """
    Remove what swaps into `target` that a crash interrupted left beside it: partial `.tmp-NAME-*` folders and
    replaced `.old-NAME-*` ones (the old content, whose replacement is about to be written anyway). Returns their
    names. Only for a caller that knows no other swap into `target` is under way.
    """
    target = Path(target)
    removed = []
    for prefix in (PARTIAL_PREFIX, ASIDE_PREFIX):
        for leftover in sorted(target.parent.glob(f"{prefix}{target.name}-*")):
            # mkdtemp's suffix has no "-": `.tmp-a-b-x1` is a swap into `a-b`, not into `a`.
            if "-" not in leftover.name[len(f"{prefix}{target.name}-") :]:
                shutil.rmtree(leftover)
                removed.append(leftover.name)
    return removed


def remove_folder(folder: str | os.PathLike, on_step: Callable[[str], None] | None = None):
    """
    Remove `folder` so that a crash never leaves part of it under its own name: it is renamed to `.deleting-NAME`
    beside it (a leftover of that name, whose removal a crash interrupted, goes first), then deleted. `on_step` is
    called with `"moved-aside"` after the rename (tests kill the process there).
    """
    folder = Path(folder)
    doomed = folder.with_name(DELETING_PREFIX + folder.name)
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    if on_step is not None:
        on_step("moved-aside")
    shutil.rmtree(doomed)


__all__ = [
    "ASIDE_PREFIX",
    "DELETING_PREFIX",
    "PARTIAL_PREFIX",
    "commit_file",
    "fsync_file",
    "fsync_folder",
    "install_folder",
    "link_tree",
    "new_partial_folder",
    "open_atomic",
    "remove_folder",
    "remove_swap_leftovers",
    "swap_folder",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
