"""The augmentation benchmark: every operation timed, kornia side by side or absent."""

from __future__ import annotations

import json
import sys

import pytest

from sifa.benchmarks.augment import (
    AugmentResult,
    benchmark_augment,
    format_augment,
    kornia_version,
)
from sifa.cli import main
from sifa.data.rand_augment import RELEASED_OPS, STANDARD_OPS

TINY = {"frames": 2, "size": 16, "repeats": 1}


def test_every_operation_and_the_wholes_are_timed():
    results = benchmark_augment(**TINY, kornia=False)
    names = [r.name for r in results]
    assert names[:-3] == list(dict.fromkeys(STANDARD_OPS + RELEASED_OPS))
    assert names[-3:] == [
        "RandAugment n=2 m=9 (standard)",
        "RandAugment n=2 m=9 (released)",
        "RandomErasing p=1",
    ]
    assert all(r.sifa_ms >= 0 and r.kornia_ms is None for r in results)
    assert next(r for r in results if r.name == "Cutout").sets == "released"
    assert next(r for r in results if r.name == "Rotate").sets == "standard, released"


def test_table_gives_the_ratio_to_ours():
    rows = [AugmentResult("Rotate", "standard", 2.0, 5.0, "Rotate(-30, 30)"),
            AugmentResult("Cutout", "released", 1.0, None, "")]  # fmt: skip
    table = format_augment(rows, "tiny", "kornia note")
    assert "| Rotate | standard | 2.00 | 5.00 | 2.50x | Rotate(-30, 30) |" in table
    assert "| Cutout | released | 1.00 | — | — | — |" in table
    assert table.startswith("tiny\n") and table.endswith("\n\nkornia note")


@pytest.mark.skipif(kornia_version() is None, reason="kornia is not installed")
def test_kornia_counterparts_side_by_side():
    results = benchmark_augment(**TINY, kornia=True)
    timed = {r.name for r in results if r.kornia_ms is not None}
    assert "Rotate" in timed and "RandomErasing p=1" in timed
    assert not {"Identity", "Cutout"} & timed


def test_the_command_runs_without_kornia(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kornia", None)  # import kornia raises ImportError
    assert kornia_version() is None
    args = ["benchmark", "augment", "--frames", "2", "--size", "16", "--repeats", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "kornia not installed" in out and "| Equalize | standard, released |" in out
    assert main([*args, "--json", "--no-kornia"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in rows} >= {"Sharpness", "RandomErasing p=1"}
