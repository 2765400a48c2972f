"""
Telling a mistyped local path from a Hub id, before anything asks the Hub: a folder that is not there is named as
missing at once, rather than after the Hub client's retries end in a Hub error about a repository of that name.
"""

import os
import re


# What huggingface_hub accepts as a repository id: `name` or `owner/name`, letters, digits, `-`, `_` and `.`.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def looks_local(path: str | os.PathLike) -> bool:
    """
    Whether `path` can only mean a local file or folder: it starts with `./`, `../`, `/` or `~`, contains a
    separator and is not `owner/name`, or is `owner/name` whose `owner` is a folder here (`outputs/vqvae`).
    """
    text = os.fspath(path)
    if text.startswith(("./", "../", "/", "~", ".\\", "..\\")) or text in (".", ".."):
        return True
    if os.sep in text or (os.altsep and os.altsep in text) or "/" in text:
        return not _HUB_ID.match(text) or os.path.isdir(text.split("/")[0])
    return False


def check_local_path(path: str | os.PathLike, argument: str) -> None:
    """
    Raise FileNotFoundError naming `argument` when `path` looks local (`looks_local`) and does not exist; a path
    that exists, or a Hub id, passes.
    """
    text = os.fspath(path)
    full = os.path.abspath(os.path.expanduser(text))
    if looks_local(text) and not os.path.exists(full):
        raise FileNotFoundError(
            f"`{argument}` {text!r} is not there: no such file or folder ({full}). Check the path; a Hub id is "
            "written owner/name."
        )


__all__ = ["check_local_path", "looks_local"]
