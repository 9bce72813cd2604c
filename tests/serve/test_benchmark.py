"""``sifa benchmark serve`` on a few requests: every row answered, counted and formatted, the
server's batches read from its health, its memory read twice."""

from __future__ import annotations

import json

import pytest

from sifa.cli import main
from sifa.serve.benchmark import LoadResult, benchmark_serve, format_serve


def test_percentiles_pick_from_the_sorted_latencies():
    row = LoadResult("x", 1, 5, 0, 1.0, [50.0, 10.0, 40.0, 20.0, 30.0])
    assert (row.percentile(0.0), row.percentile(0.5), row.percentile(1.0)) == (10, 30, 50)
    assert row.per_second == 5.0


def test_a_small_run_fills_every_row_and_reads_the_memory(capsys):
    result = benchmark_serve(
        max_batches=(4,), clients=(1, 3), requests=6, memory_requests=6, threads=1
    )
    loop, one, three = result.rows
    assert loop.mode == "Predictor loop" and loop.requests == 6
    for row, clients in ((one, 1), (three, 3)):
        assert (row.mode, row.clients) == ("sifa serve --max-batch 4", clients)
        assert row.requests == 6 and row.refused == 0 and len(row.latencies_ms) == 6
        assert 1.0 <= row.views_per_call <= 4.0  # one view per request, batches of at most 4
    assert result.memory.requests == 6 and result.memory.before_mib > 50
    table = format_serve(result)
    assert "| sifa serve --max-batch 4 | 3 | 6 |" in table
    assert "after 6 more requests" in table


def test_the_command_checks_its_numbers(capsys):
    assert main(["benchmark", "serve", "--requests", "0"]) == 2
    assert "--requests must be at least 1, got 0" in capsys.readouterr().err
    assert main(["benchmark", "serve", "--clients", "0"]) == 2


@pytest.mark.parametrize("option", ["--json"])
def test_json_holds_the_rows(capsys, option):
    status = main(["benchmark", "serve", "--max-batch", "2", "--clients", "2", "--requests",
                   "4", "--memory-requests", "0", "--threads", "1", option])  # fmt: skip
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["mode"] for row in report["rows"]] == ["Predictor loop", "sifa serve --max-batch 2"]
    assert report["rows"][1]["requests"] == 4 and report["memory"] is None
