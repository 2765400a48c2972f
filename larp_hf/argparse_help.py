"""
`--help` that shows every flag's default, for the recipes and `larp-hf` alike (kept free of heavy imports: the CLI's
`--help` reads it before torch is loaded).
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


__all__ = ["ArgumentParser", "DefaultsHelpFormatter"]
