"""The model benchmark: fresh process per model, ratios against the C2D baseline."""

from __future__ import annotations

import pytest

from sifa.benchmarks import models
from sifa.benchmarks.models import StepTimes, baseline_of, benchmark_models, format_benchmark

from training_fixtures import fork_instead_of_spawn


@pytest.fixture
def forked_fresh_processes(monkeypatch):
    fork_instead_of_spawn(monkeypatch, models)


def test_benchmark_measures_and_tabulates_ratios(forked_fresh_processes):
    names = ["sifa_resnet18", "c2d_resnet18"]
    results = benchmark_models(names, batch=2, frames=8, size=32, warmup=0, repeats=1, threads=1)
    assert [r.model for r in results] == names
    sifa_row, c2d_row = results
    for r in results:
        assert r.train_s > 0 and r.infer_s > 0 and r.train_peak_mib > 0
    assert sifa_row.gmacs > c2d_row.gmacs  # offset convs and the operator cost something
    table = format_benchmark(results, "tiny")
    assert "ratios against c2d_resnet18" in table
    row = next(line for line in table.splitlines() if line.startswith("| sifa_resnet18"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{sifa_row.train_s / c2d_row.train_s:.2f}"
    assert cells[5] == f"{sifa_row.infer_s / c2d_row.infer_s:.2f}"


def test_each_family_is_compared_with_its_per_frame_network():
    names = ["sifa_swin_t", "swin_t", "tsm_resnet50", "sifa_resnet50", "c2d_resnet50", "x3d"]
    assert [baseline_of(n, names) for n in names] == [
        "swin_t",
        "swin_t",
        "c2d_resnet50",
        "c2d_resnet50",
        "c2d_resnet50",
        "x3d",
    ]
    assert baseline_of("sifa_swin_t", ["sifa_swin_t", "c2d_resnet18"]) == "sifa_swin_t"
    rows = [StepTimes(n, 2.0 * (i + 1), 1.0 * (i + 1), 1, 1, 1) for i, n in enumerate(names[:3])]
    rows.append(StepTimes("c2d_resnet50", 8.0, 8.0, 1, 1, 1))
    table = format_benchmark(rows, "made up")
    assert "ratios against swin_t, c2d_resnet50" in table
    rows_cells = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith(("| model", "| ---"))
    ]
    ratios = {cells[0]: (cells[3], cells[5]) for cells in rows_cells}
    assert ratios == {
        "sifa_swin_t": ("0.50", "0.50"),
        "swin_t": ("1.00", "1.00"),
        "tsm_resnet50": ("0.75", "0.38"),
        "c2d_resnet50": ("1.00", "1.00"),
    }


def test_a_failing_model_is_named(forked_fresh_processes):
    # One clip of 4 frames at 32 px leaves BatchNorm a single value per channel in training.
    with pytest.raises(ValueError, match=r"benchmark of c2d_resnet18 failed: ValueError: Expected"):
        benchmark_models(["c2d_resnet18"], batch=1, frames=4, size=32, warmup=0, repeats=1)


def test_models_take_turns_step_by_step(monkeypatch):
    calls = []

    class Recorder:
        def __init__(self, name, *args):
            self.name = name

        def infer(self):
            calls.append(("infer", self.name))

        def train(self):
            calls.append(("train", self.name))

        def sync(self):
            pass

    monkeypatch.setattr(models, "_Steps", Recorder)
    times = models._measure_times(
        ["a", "b"], 1, 8, 32, warmup=1, repeats=2, threads=None, device="cpu", precision="float32"
    )
    turns = [("infer", "a"), ("infer", "b")] * 3 + [("train", "a"), ("train", "b")] * 3
    assert calls == turns  # one warm-up round, then two timed rounds, per kind
    assert set(times) == {"a", "b"} and all(set(t) == {"infer", "train"} for t in times.values())
