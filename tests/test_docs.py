"""The code blocks of README.md and docs/: every ``python`` block runs on its own, every ``sifa``
command line parses, every YAML training config is a valid config.

- ``python``: each block in a fresh process of its own (``PYTHONPATH`` the repository's ``src``,
  the working folder a temporary one, one torch thread, a time limit), so that a block that
  leans on an import or a name of another block fails.
- ``bash`` (and the ``$ `` lines of other blocks): every line that runs ``sifa`` (also
  ``python -m sifa``, ``torchrun ... -m sifa`` and ``python benchmarks/NAME.py``) names a
  command that exists, options that exist for it, and parses as ``sifa`` would parse it. Nothing
  is run: the commands train, or need data.
- ``yaml``: parses; a training config (top-level keys of ``TrainConfig``, among them ``model``,
  ``data`` or ``optim``) loads through ``load_config``, which refuses an unknown key or value.
- ``json``: parses.

A block that cannot run here (a GPU, a trained run, a dataset, a weights file) is preceded by
``<!-- docs-test: skip (reason) -->``. That marker, with its reason, is the only way to leave a
block out; blocks so marked are not collected, so pytest reports no skips.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import yaml

from sifa.cli import build_parser
from sifa.engine.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->", re.S)
SKIP = re.compile(r"\s*skip\s*\((?P<reason>[^()]*\S[^()]*)\)\s*")
TIMEOUT_S = 120


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, from 1
    lang: str
    text: str
    skip: str | None  # the marker's reason

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Marker:
    path: Path
    line: int
    body: str
    before_block: bool  # only blank lines between it and an opening fence


def read_page(path: Path) -> tuple[list[Block], list[Marker]]:
    """The fenced blocks of a Markdown file, and the ``docs-test`` markers outside them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, markers = [], []
    pending: Marker | None = None  # a marker waiting for its block
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            found = MARKER.search(lines[i])
            if found:
                if pending is not None:
                    markers.append(pending)
                pending = Marker(path, i + 1, found["body"], before_block=False)
            elif lines[i].strip() and pending is not None:
                markers.append(pending)  # text between the marker and the next block
                pending = None
            i += 1
            continue
        fence = opening["fence"]
        end = i + 1
        while end < len(lines) and not re.fullmatch(rf"{fence}`*\s*", lines[end]):
            end += 1
        reason = None
        if pending is not None:
            markers.append(Marker(pending.path, pending.line, pending.body, before_block=True))
            skip = SKIP.fullmatch(pending.body)
            reason = skip["reason"].strip() if skip else None
            pending = None
        text = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(path, i + 1, opening["lang"].lower(), text, reason))
        i = end + 1
    if pending is not None:
        markers.append(pending)
    return blocks, markers


BLOCKS: list[Block] = []
MARKERS: list[Marker] = []
for _page in PAGES:
    _blocks, _markers = read_page(_page)
    BLOCKS += _blocks
    MARKERS += _markers


def collected(*langs: str) -> list:
    return [pytest.param(b, id=b.name) for b in BLOCKS if b.lang in langs and b.skip is None]


# ---------------------------------------------------------------------------------------------
# The markers


def test_the_pages_have_code_blocks():
    assert len(PAGES) > 10
    assert len([b for b in BLOCKS if b.lang == "python" and b.skip is None]) >= 4


@pytest.mark.parametrize("marker", MARKERS, ids=lambda m: f"{m.path.relative_to(ROOT)}:{m.line}")
def test_every_marker_skips_the_next_block_and_says_why(marker):
    assert SKIP.fullmatch(marker.body), (
        f"write <!-- docs-test: skip (why the block cannot run here) -->, got {marker.body!r}"
    )
    assert marker.before_block, "a docs-test marker must come right before a fenced block"


# ---------------------------------------------------------------------------------------------
# Python blocks


def distinct_python_blocks() -> list:
    """One test per distinct block: the README's tour repeats blocks of the pages, and a
    failure names every place the block is in."""
    places: dict[str, list[Block]] = {}
    for block in BLOCKS:
        if block.lang in ("python", "py") and block.skip is None:
            places.setdefault(block.text, []).append(block)
    return [pytest.param(same, id=same[0].name) for same in places.values()]


@pytest.mark.parametrize("blocks", distinct_python_blocks())
def test_python_block_runs_on_its_own(blocks, tmp_path):
    block, where = blocks[0], ", ".join(b.name for b in blocks)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # one thread, as the test workers compute
    }
    script = tmp_path / "block.py"
    script.write_text(block.text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, f"{where} failed on its own:\n{result.stderr[-3000:]}"


# ---------------------------------------------------------------------------------------------
# Command lines


def command_lines(block: Block) -> list[str]:
    """The block's command lines, continuations joined: every line of a shell block, the
    ``$ `` lines of any other block."""
    shell = block.lang in ("bash", "sh", "shell", "console")
    commands, current = [], ""
    for raw in block.text.splitlines():
        line = raw.rstrip()
        if not current:
            if line.startswith("$ "):
                line = line[2:]
            elif not shell:
                continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        commands.append(current + line)
        current = ""
    return [c for c in commands if c.strip()]


def sifa_arguments(words: list[str], block: Block) -> list[str] | None:
    """The arguments ``sifa`` gets from one simple command, or None when it does not run sifa."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]  # VAR=value before the command
    if not words:
        return None
    if words[0] == "sifa":
        return words[1:]
    if words[0] == "torchrun" or words[:2] == ["python", "-m"]:
        for i in range(len(words) - 1):
            if words[i] == "-m":
                return words[i + 2 :] if words[i + 1] == "sifa" else None
        return None
    if words[0] == "python" and len(words) > 1 and words[1].endswith(".py"):
        script = ROOT / words[1]
        assert script.is_file(), f"{block.name}: {words[1]} does not exist"
        target = re.search(r'main\(\["benchmark", "([\w-]+)"', script.read_text(encoding="utf-8"))
        if target:
            return ["benchmark", target[1], *words[2:]]
        text = script.read_text(encoding="utf-8")
        for word in words[2:]:
            if word.startswith("--"):
                option = word.split("=", 1)[0]
                assert f'"{option}"' in text, f"{block.name}: {words[1]} has no option {option}"
    return None


def subcommand(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], object]:
    """The command path (``["benchmark", "op"]``) and its parser."""
    path = []
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word.startswith("-"):
            break
        choices, name = actions[0].choices, " ".join(["sifa", *path])
        assert word in choices, f"{name}: no command {word!r} (there are {sorted(choices)})"
        parser = actions[0].choices[word]
        path.append(word)
    return path, parser


def check_sifa_command(arguments: list[str], parser: argparse.ArgumentParser, where: str) -> None:
    # [--option VALUE] in a usage line: an optional part, checked as if given.
    arguments = [a.strip("[]") for a in arguments if a.strip("[]")]
    path, command = subcommand(parser, arguments)
    assert path, f"{where}: `sifa` with no command"
    options = {o for a in command._actions for o in a.option_strings}
    for word in arguments:
        if word.startswith("--") and word.split("=", 1)[0] not in options:
            raise AssertionError(f"{where}: `sifa {' '.join(path)}` has no option {word}")
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parsed, extra = parser.parse_known_args(arguments)
    except SystemExit:
        raise AssertionError(f"{where}: sifa {' '.join(arguments)}\n{errors.getvalue()}") from None
    # As sifa.cli.main: what argparse leaves over must be KEY=VALUE switches of the command.
    bad = [a for a in extra if a.startswith("-") or "=" not in a or "switches" not in parsed]
    assert not bad, f"{where}: `sifa {' '.join(path)}` does not take {bad}"


@pytest.fixture(scope="module")
def parser():
    return build_parser()


DATA_LANGS = ("python", "py", "yaml", "yml", "json", "markdown", "md")


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b, id=b.name)
        for b in BLOCKS
        if b.lang not in DATA_LANGS and b.skip is None and command_lines(b)
    ],
)
def test_sifa_command_lines_parse(block, parser):
    for line in command_lines(block):
        words = shlex.split(line, comments=True)
        simple, current = [], []
        for word in [*words, ";"]:
            if word in ("|", "||", "&&", ";", "&"):
                simple.append(current)
                current = []
            else:
                current.append(word)
        for command in simple:
            arguments = sifa_arguments(command, block)
            if arguments is not None:
                check_sifa_command(arguments, parser, f"{block.name}: {line.strip()}")


# ---------------------------------------------------------------------------------------------
# YAML and JSON


TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


@pytest.mark.parametrize("block", collected("yaml", "yml"))
def test_yaml_block_is_valid(block, tmp_path):
    data = yaml.safe_load(block.text)
    assert data is not None, f"{block.name}: empty"
    if isinstance(data, dict) and set(data) & {"model", "data", "optim"}:
        unknown = set(data) - TRAIN_KEYS
        assert not unknown, f"{block.name}: not keys of a training config: {sorted(unknown)}"
        path = tmp_path / "config.yaml"
        path.write_text(block.text, encoding="utf-8")
        load_config(path)  # raises ConfigError naming the key


@pytest.mark.parametrize("block", collected("json"))
def test_json_block_parses(block):
    json.loads(block.text)


# ---------------------------------------------------------------------------------------------
# The README's links (mkdocs build --strict checks those of the pages)


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, slugged as GitHub and Python-Markdown do for
    headings of words, spaces, hyphens and punctuation."""
    slugs, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,6} (.+)", line)
        if heading:
            words = re.sub(r"[^\w\- ]", "", heading[1]).strip().lower()
            slugs.add(re.sub(r"[-\s]+", "-", words))
    return slugs


def readme_links() -> list:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # not inside code blocks
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return sorted({t for t in targets if not re.match(r"[a-z]+:", t)})


@pytest.mark.parametrize("target", readme_links())
def test_readme_link_resolves(target):
    file, _, anchor = target.partition("#")
    path = ROOT / file if file else ROOT / "README.md"
    assert path.is_file(), f"README.md links to {file}, which does not exist"
    if anchor:
        assert anchor in anchors(path), f"README.md links to {target}: no such heading"
