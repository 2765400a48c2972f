"""
How flags read and show, for the recipes and `larp-hf` alike: one syntax for lists (`list_of`) and `--help` that
shows every flag's default (`DefaultsHelpFormatter`). Kept free of heavy imports: the CLI's `--help` reads it before
torch is loaded.
"""

import argparse


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """
    argparse's help with `(default: VALUE)` after every option that takes a value, and after switches that are on
    by default; the description keeps its own line breaks (usage examples). A help text that already says its
    default (`default: the prior's stored value`, `--flag/--no-flag`'s own) is left as it is. Unlike
    `ArgumentDefaultsHelpFormatter`, a flag without help text gets its default shown too.
    """

    def _format_action(self, action: argparse.Action) -> str:
        if action.option_strings and _shows_default(action):
            action = _with_help(action, f"{action.help or ''} (default: %(default)s)".strip())
        return super()._format_action(action)


def _shows_default(action: argparse.Action) -> bool:
    if action.default is argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return False
    if "default" in (action.help or "").lower() or action.help == argparse.SUPPRESS:
        return False
    switch = action.nargs == 0
    return not switch or bool(action.default)  # `--overwrite`'s "(default: False)" says nothing


def _with_help(action: argparse.Action, help: str) -> argparse.Action:
    """A copy of `action` with another help text (the parser's own action is left as it was)."""
    copy = argparse.Action.__new__(type(action))
    copy.__dict__.update(vars(action), help=help)
    return copy


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose help shows the defaults (`DefaultsHelpFormatter`), sub-commands' too."""

    def __init__(self, *args, formatter_class=DefaultsHelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def parse_list(text: str, kind=int) -> list:
    """
    The one syntax of list flags: comma-separated values (`32,64`), also taken in brackets (`[32,64]`, `[32, 64]`, as
    YAML writes a list), spaces allowed; each value converted by `kind` (`int`, `float`, `str`). Raises
    `argparse.ArgumentTypeError` naming what was expected.
    """
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    items = [item.strip() for item in body.split(",")]
    try:
        return [kind(item) for item in items if item]
    except ValueError:
        what = {int: "integers", float: "numbers"}.get(kind, "values")
        raise argparse.ArgumentTypeError(f"expected one or comma-separated {what} (e.g. 32,64), got {text!r}") from None


def list_of(kind=int):
    """An argparse `type` that reads a list with `parse_list` (`--hidden_channels 32,64`, `--top-k 0,50`)."""

    def parse(text: str) -> list:
        return parse_list(text, kind)

    parse.__name__ = f"list of {kind.__name__}"
    parse.reads_a_list = True  # a YAML list in a --config file is taken for it too
    return parse


__all__ = ["ArgumentParser", "DefaultsHelpFormatter", "list_of", "parse_list"]
