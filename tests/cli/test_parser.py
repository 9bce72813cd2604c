"""The ``sifa`` parser against its snapshot (tests/cli/parser_snapshot.json): every command, its
help text and its options. A change on purpose: ``python tests/cli/parser_snapshot.py``, then
review the snapshot's diff."""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path

import pytest

from sifa.cli import build_parser


def _load_helper():
    # tests/ is on sys.path, tests/cli/ is not: the helper is loaded from its file.
    path = Path(__file__).with_name("parser_snapshot.py")
    spec = importlib.util.spec_from_file_location("parser_snapshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


parser_snapshot = _load_helper()
REGENERATE = "(on purpose? python tests/cli/parser_snapshot.py, and review the diff)"


def first_difference(expected: dict, actual: dict, fields: tuple[str, ...]) -> str | None:
    """The first command path and field where the parsers differ, readably; None if none."""
    missing = [path for path in expected if path not in actual]
    extra = [path for path in actual if path not in expected]
    if missing or extra:
        return f"commands missing: {missing}; commands not in the snapshot: {extra}"
    for path in sorted(expected):
        want, got = expected[path], actual[path]
        for field in fields:
            if want[field] == got[field]:
                continue
            if field == "help":
                diff = difflib.unified_diff(want[field], got[field], "snapshot", "now", lineterm="")
                return f"{path!r}: help text differs:\n" + "\n".join(list(diff)[:40])
            if field == "actions":
                if len(want[field]) != len(got[field]):
                    names = [[a["dest"] for a in side[field]] for side in (want, got)]
                    return f"{path!r}: actions {names[0]} in the snapshot, now {names[1]}"
                for old, new in zip(want[field], got[field], strict=True):
                    changed = [f"  {key}: {old[key]!r} -> {new[key]!r}" for key in old
                               if old[key] != new[key]]  # fmt: skip
                    if changed:
                        name = "/".join(old["option_strings"]) or old["dest"]
                        return f"{path!r}: action {name}:\n" + "\n".join(changed)
            return f"{path!r}: {field}: {want[field]!r} -> {got[field]!r}"
    return None


@pytest.fixture(scope="module")
def parsers() -> tuple[dict, dict]:
    """(the snapshot's, the parser's now)"""
    saved = json.loads(parser_snapshot.SNAPSHOT.read_text())
    now = json.loads(json.dumps(parser_snapshot.snapshot(build_parser())))  # tuples as lists
    return saved, now


def test_every_command_and_option_is_as_in_the_snapshot(parsers):
    saved, now = parsers
    fields = ("defaults", "exclusive_groups", "actions")
    difference = first_difference(saved["parsers"], now["parsers"], fields)
    assert difference is None, f"{difference}\n{REGENERATE}"


def test_every_help_text_is_as_in_the_snapshot(parsers):
    saved, now = parsers
    if saved["python"] != now["python"]:
        pytest.skip(f"help laid out by Python {now['python']}, the snapshot's by {saved['python']}")
    difference = first_difference(saved["parsers"], now["parsers"], ("help",))
    assert difference is None, f"{difference}\n{REGENERATE}"
    assert now == saved  # the whole description, as parser_snapshot.py writes it
