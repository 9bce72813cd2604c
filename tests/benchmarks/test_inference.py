"""The inference benchmark on the demo's tiny model: extraction rate and stream latencies."""

from __future__ import annotations

import json

import pytest

from sifa.benchmarks.inference import (
    FPS,
    benchmark_inference,
    describe_setting,
    expected_predictions,
    format_inference,
)
from sifa.cli import main

TINY = {"models": ["sifa_resnet18"], "sizes": [32], "videos": [2], "batch_size": 2}


def _predictions(seconds: float, fps: int, window: int, stride_seconds: float) -> int:
    """As stream.py documents it: the first prediction when the first window is full, then one
    every round(stride_seconds x fps) frames; one for a stream shorter than the window."""
    frames = round(seconds * fps)
    stride = round(stride_seconds * fps)
    if frames < window:
        return 1
    ends = range(window, frames + 1)
    return sum(1 for end in ends if (end - window) % stride == 0)


def test_expected_predictions_follow_the_stream_rules():
    assert expected_predictions(50, 8, 10) == 5  # windows ending at frames 8, 18, 28, 38, 48
    assert expected_predictions(48, 8, 10) == 5
    assert expected_predictions(47, 8, 10) == 4
    assert expected_predictions(5, 8, 10) == 1  # shorter than the window: one prediction
    assert _predictions(2.0, 25, 8, 0.4) == 5


def test_tiny_model_is_measured():
    results = benchmark_inference(**TINY, stream_seconds=2.0, stride_seconds=0.4)
    assert len(results) == 1
    r = results[0]
    assert (r.model, r.frames, r.size, r.clip) == ("sifa_resnet18", 8, 32, "8x32x32")
    assert r.switches == {"base_width": 16, "dropout": 0.0}
    assert r.videos == 2 and r.extraction_s > 0 and r.videos_per_s > 0
    assert r.fps == FPS and r.stream_frames == 2 * FPS  # every frame of the 2 s video read
    # dense sampling: the window is clip_len x frame_interval frames
    assert (r.window, r.stride) == (8, 10)
    assert r.predictions == _predictions(2.0, FPS, 8, 0.4) == 5
    assert r.skipped == 0  # a file read as fast as it decodes waits for the model
    assert 0 < r.latency_mean_ms < 10_000 and 0 < r.latency_p95_ms < 10_000
    table = format_inference(results, describe_setting(results, 2, 0.4, False))
    row = table.splitlines()[-1]
    assert row.startswith("| sifa_resnet18 (base_width=16, dropout=0.0) | 8x32x32 | ")
    assert f"| {r.videos_per_s:.2f} | 5 | {r.latency_mean_ms:.1f} |" in row


def test_realtime_counts_skipped_predictions():
    results = benchmark_inference(**TINY, stream_seconds=1.0, stride_seconds=0.4, realtime=True)
    r = results[0]
    assert r.realtime and r.stream_frames == FPS
    assert r.predictions + r.skipped == _predictions(1.0, FPS, 8, 0.4) == 2
    assert r.predictions >= 1


def test_values_per_model_must_match_the_models():
    with pytest.raises(ValueError, match="one per model"):
        benchmark_inference(["sifa_resnet18", "c2d_resnet18"], sizes=[32, 32, 32])
    with pytest.raises(ValueError, match="unknown model"):
        benchmark_inference(["no_such_model"])
    with pytest.raises(ValueError, match="even"):
        benchmark_inference(["sifa_resnet18"], sizes=[33])


def test_the_command_prints_the_table_and_json(capsys):
    args = ["benchmark", "inference", "--models", "sifa_resnet18", "--size", "32",
            "--videos", "2", "--batch", "2", "--stream-seconds", "1", "--stride-seconds", "0.4",
            "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU, 1 torch threads, random weights")
    assert "| model | clip | extraction videos/s | stream predictions |" in out
    assert "| sifa_resnet18 (base_width=16, dropout=0.0) | 8x32x32 | " in out
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in rows] == ["sifa_resnet18"]
    assert rows[0]["predictions"] == _predictions(1.0, FPS, 8, 0.4) == 2
    assert main([*args[:4], "no_such_model"]) == 2
