"""The operator benchmark runs every row and reports ratios against the reference."""

from __future__ import annotations

import json
import math

from sifa.benchmarks import ops
from sifa.benchmarks.ops import CONV, benchmark_op, format_op_benchmark
from sifa.cli import main

from backend_params import require_cpu_kernel
from training_fixtures import fork_instead_of_spawn


def test_rows_times_memory_and_ratios(monkeypatch):
    require_cpu_kernel()
    fork_instead_of_spawn(monkeypatch, ops)  # each row's memory: still a fresh process
    results = benchmark_op(backends=["reference", "cpu"], batch=1, frames=3, shapes=((8, 6),),
                           warmup=0, repeats=1, threads=1)  # fmt: skip
    assert [r.row for r in results] == ["reference", "cpu", CONV]
    for r in results:
        assert r.forward_ms > 0 and r.forward_backward_ms > 0
        assert r.forward_extra_mib is not None and math.isfinite(r.forward_extra_mib)
    assert results[0].input_mib == 2 * 8 * 6 * 6 * 4 / 2**20  # 2 frame pairs, float32
    # query, key and output once each, and the 18 offset channels
    assert math.isclose(
        results[0].forward_min_mib, 3 * results[0].input_mib + 2 * 18 * 36 * 4 / 2**20
    )
    assert all(r.bound_ms > 0 for r in results)
    table = format_op_benchmark(results, "setting")
    rows = [line for line in table.splitlines() if line.startswith("| 8 x 6 x 6")]
    assert len(rows) == 3
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert cells[0][3] == cells[0][5] == ""  # the reference has no speed-up against itself
    speed_up = results[0].forward_ms / results[1].forward_ms
    assert cells[1][3] == f"{speed_up:.1f}x"


def test_command_json(capsys):
    require_cpu_kernel()
    args = ["benchmark", "op", "--batch", "1", "--frames", "2", "--repeats", "1", "--warmup",
            "0", "--threads", "1", "--no-memory", "--json", "--backends", "cpu",
            "--shapes", "4x5", "8x3"]  # fmt: skip
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["row"] for r in rows} == {"reference", "cpu", CONV}  # the reference is always in
    assert [(r["channels"], r["size"]) for r in rows] == [(4, 5)] * 3 + [(8, 3)] * 3
    assert all(r["forward_extra_mib"] is None for r in rows)
