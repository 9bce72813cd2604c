"""A snapshot of the ``sifa`` parser: every command's help text and options, to compare the
parser against (tests/cli/test_parser.py) while the code behind it changes.

When a command's options or help change on purpose, regenerate the snapshot and review its diff:

    python tests/cli/parser_snapshot.py

(with the working tree's ``sifa`` importable, e.g. ``PYTHONPATH=src``). The help texts are those
of the Python version that wrote the snapshot (argparse's layout changes between versions); the
test compares them only under that version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("parser_snapshot.json")

# argparse wraps help to the terminal's width, from COLUMNS where it is set; Python 3.14 colours
# it where the environment allows.
HELP_ENVIRONMENT = {"COLUMNS": "100", "PYTHON_COLORS": "0", "NO_COLOR": "1"}


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@contextlib.contextmanager
def help_environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in HELP_ENVIRONMENT}
    os.environ.update(HELP_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _name(value) -> str | None:
    """A type or handler by name (its repr carries a memory address)."""
    if value is None:
        return None
    return getattr(value, "__name__", repr(value))


def _listed(value):
    """Tuples as lists, so that a description equals itself read back from JSON."""
    return list(value) if isinstance(value, tuple) else value


def describe_action(action: argparse.Action) -> dict:
    # as a list; a sub-commands action's (its parsers by name) as the names, in order
    choices = None if action.choices is None else list(action.choices)
    return {
        "action": type(action).__name__,
        "dest": action.dest,
        "option_strings": list(action.option_strings),
        "nargs": action.nargs,
        "default": repr(action.default),
        "const": repr(action.const),
        "type": _name(action.type),
        "choices": choices,
        "required": action.required,
        "metavar": _listed(action.metavar),
        "help": action.help,
    }


def describe_parser(parser: argparse.ArgumentParser, path: str | None = None) -> dict:
    """``{"sifa": {...}, "sifa train": {...}, "sifa benchmark op": {...}, ...}``: per parser its
    help text (as lines, at 100 columns), its defaults (a handler by name), its mutually exclusive
    groups and every action's settings."""
    path = path or parser.prog
    with help_environment():
        help_lines = parser.format_help().splitlines()
    described = {
        path: {
            "help": help_lines,
            "defaults": {
                key: _name(value) if callable(value) else repr(value)
                for key, value in sorted(parser._defaults.items())
            },
            "exclusive_groups": [
                {"required": group.required, "dests": [a.dest for a in group._group_actions]}
                for group in parser._mutually_exclusive_groups
            ],
            "actions": [describe_action(action) for action in parser._actions],
        }
    }
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                described.update(describe_parser(sub, f"{path} {name}"))
    return described


def snapshot(parser: argparse.ArgumentParser) -> dict:
    return {"python": python_version(), "parsers": describe_parser(parser)}


if __name__ == "__main__":
    from sifa.cli import build_parser

    text = json.dumps(snapshot(build_parser()), sort_keys=True, indent=1)
    SNAPSHOT.write_text(text + "\n")
    print(f"wrote {SNAPSHOT}")
