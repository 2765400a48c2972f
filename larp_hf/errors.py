"""
The error policy of the `larp-hf` commands and the recipes, in one place: every failure is told in one or two lines
(what, where, the fix) on stderr, with no traceback unless `--debug` or `LARP_HF_DEBUG=1`, and an exit status that
says how it ended: 1 for an error, 130 for Ctrl-C, 0 when the reader of our output went away (`larp-hf info | head`).

`run_command` wraps a command's work, `run_script` a recipe's `main`; `check_output_path` and `check_model_reference`
are the checks commands run before their work, so that an unwritable output or a mistyped model folder fails in a
second, not after minutes of sampling (or as a Hub error, after retries).
"""

import errno
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path


DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "LARP_HF_DEBUG"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C

# What a training recipe keeps when it is interrupted: checkpoints are written whole or not at all.
TRAINING_INTERRUPTED = (
    "the checkpoints saved so far (if any) are kept, each whole; continue with --resume_from_checkpoint latest"
)
REPORT_HINT = f"run with {DEBUG_FLAG} (or {DEBUG_VARIABLE}=1) for the traceback, and please report it"


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether the user asked for tracebacks: `--debug` among `argv` or `LARP_HF_DEBUG` set to 1/true/yes."""
    argv = sys.argv[1:] if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def _path_of(error: OSError) -> str | None:
    return None if error.filename is None else os.fsdecode(error.filename)


def _is_plain_os_message(error: OSError) -> bool:
    """True when `error` carries only the operating system's wording ("[Errno 2] No such file ...") that we reword;
    False for an error raised with its own sentence, which already says what to do."""
    return error.errno is not None and error.strerror == os.strerror(error.errno)


def describe_error(error: BaseException) -> str:
    """
    The message for a failure, in the user's terms: what went wrong, the path it concerns, and what to do. Known
    kinds (bad values, missing or misplaced files and folders, permissions, full or read-only disks, YAML syntax)
    are described; anything else is an unexpected error, told in one line with a request to report it.
    """
    import yaml

    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, yaml.YAMLError):
        return _describe_yaml_error(error)
    if isinstance(error, OSError) and _is_plain_os_message(error):
        path = _path_of(error)
        where = f" {path}" if path else ""
        if isinstance(error, FileNotFoundError):
            return f"no such file or folder:{where}. Check the path (a typo, or a folder that was moved?)."
        if isinstance(error, IsADirectoryError):
            return f"{path or 'the path'} is a folder, but a file is expected there: name a file (e.g. inside it)."
        if isinstance(error, NotADirectoryError):
            return (f"{path or 'the path'} is (or lies under) a file, but a folder is expected there: name a folder, "
                    "or move the file away.")  # fmt: skip
        if isinstance(error, PermissionError):
            return (f"permission denied:{where}. Pick a location you may write to (or read from), or change its "
                    "permissions.")  # fmt: skip
        if error.errno == errno.ENOSPC:
            return f"no space left on the disk{' of' + where if where else ''}: free some space or write elsewhere."
        if error.errno == errno.EROFS:
            return f"read-only file system:{where}. Write the output to a writable location."
        if error.errno == errno.EDQUOT:
            return f"disk quota exceeded:{where}. Free some space or write elsewhere."
        return f"{error.strerror}:{where}."
    if isinstance(error, OSError):
        return str(error)
    return _describe_unexpected(error)


def _describe_yaml_error(error) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = " ".join(str(part) for part in (getattr(error, "context", None), getattr(error, "problem", None)) if part)
    if mark is None:
        return f"the YAML file cannot be read: {problem or error}. Fix its syntax."
    return (f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: invalid YAML ({problem or error}). Fix "
            "the syntax there.")  # fmt: skip


def _describe_unexpected(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"unexpected {type(error).__name__}{': ' + message if message else ''}{where}; {REPORT_HINT}."


def _stdout_gone():
    """The reader of stdout closed the pipe (`| head`): point stdout at /dev/null so that the interpreter's final
    flush does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run_command(
    work: Callable[[], object],
    *,
    debug: bool | None = None,
    in_user_terms: Callable[[str], str] = lambda message: message,
    interrupted: Callable[[], str] | None = None,
):
    """
    Run `work()` under the error policy. A failure ends in `SystemExit`: with the message `error: ...` (Python prints
    it on stderr and exits with 1), with 130 after Ctrl-C (the message printed first), with 0 when stdout's reader
    went away; a `SystemExit` of `work` (argparse's usage errors, the commands' own refusals) passes unchanged.

    Args:
        work: the command, without arguments.
        debug: show tracebacks (re-raise); `None` reads `debug_requested()`.
        in_user_terms: rewrites a library message in the command's terms (argument names to flags).
        interrupted: on Ctrl-C, says what was kept (e.g. "the PNG files written so far are kept"); asked at that
            moment, so it may look at what was done.
    """
    debug = debug_requested() if debug is None else debug
    try:
        work()
        sys.stdout.flush()  # inside the policy: a reader gone (`| head`) shows here, not at the interpreter's exit
    except KeyboardInterrupt:
        if debug:
            raise
        kept = interrupted() if interrupted is not None else ""
        print(f"\ninterrupted{': ' + kept if kept else ''}.", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        _stdout_gone()
        raise SystemExit(0) from None
    except Exception as error:
        if debug:
            raise
        raise SystemExit(f"error: {in_user_terms(describe_error(error))}") from None


def run_script(main: Callable[[], object], interrupted: str | None = None):
    """
    The `if __name__ == "__main__":` of a recipe: `main()` under `run_command`, with `--debug` taken out of
    `sys.argv` first (the recipe's own parser never sees it) and `interrupted` said after Ctrl-C.
    """
    debug = debug_requested()
    sys.argv[1:] = [arg for arg in sys.argv[1:] if arg != DEBUG_FLAG]
    run_command(main, debug=debug, interrupted=None if interrupted is None else lambda: interrupted)


def check_output_path(path: str | os.PathLike, *, name: str, folder: bool = False) -> Path:
    """
    Refuse, with a `ValueError` naming `name` (an argument or a flag), an output `path` that cannot be written,
    before any work: a file expected where a folder is (or the reverse), something that is a file on the way to it,
    or a location where a new file cannot be created (read-only, no permission). Creates nothing that stays: the
    test is a temporary file in the nearest folder that exists.
    """
    path = Path(path)
    if path.exists() and folder != path.is_dir():
        kind = "a folder" if path.is_dir() else "a file"
        raise ValueError(f"`{name}` {path} is {kind}, but {'a folder' if folder else 'a file'} is expected there.")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"`{name}` {path} lies under {existing}, which is a file, not a folder.")
    # A folder output is written inside itself, or beside itself and swapped in: both places must take a new file.
    for place in (existing, path) if folder and path.is_dir() else (existing,):
        try:
            with tempfile.TemporaryFile(dir=place, prefix=".larp-write-test-"):
                pass
        except OSError as error:
            reason = error.strerror or str(error)
            raise ValueError(
                f"`{name}` {path} cannot be written ({reason} in {place}): pick a writable location."
            ) from None
    return path


def check_model_reference(reference: str | os.PathLike, *, name: str) -> None:
    """
    Refuse, with a `FileNotFoundError` or `ValueError` naming `name`, a model `reference` that is meant as a local
    folder but is not one: a path that does not exist (otherwise `from_pretrained` takes it for a Hub id and answers
    with a Hub error, after retries), or a file. A Hub id (`namespace/name`, one slash, not starting with `/`, `.` or
    `~`) passes: it is the loader's to find.
    """
    from .local_paths import check_local_path  # the one rule for "meant as local" (larp_hf/local_paths.py)

    text = os.fspath(reference)
    path = Path(text).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise ValueError(f"`{name}` {text} is a file, but a model folder is expected: name the folder it lies in.")
    check_local_path(text, name)


__all__ = [
    "DEBUG_FLAG",
    "DEBUG_VARIABLE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "TRAINING_INTERRUPTED",
    "check_model_reference",
    "check_output_path",
    "debug_requested",
    "describe_error",
    "run_command",
    "run_script",
]
