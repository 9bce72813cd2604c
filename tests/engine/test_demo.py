"""`sifa demo`: the whole job on a very small dataset, and its pair/order scoring."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from sifa.data.synthetic import SyntheticConfig
from sifa.engine import demo, metrics
from sifa.engine.checkpoint import resolve_checkpoint
from sifa.engine.config import load_config
from sifa.engine.demo import _pair_scores, run_demo
from sifa.engine.evaluate import evaluate_checkpoint
from sifa.engine.trainer import TrainResult


def test_pair_and_order_scores():
    labels = np.array([0, 1, 2, 3, 0, 1])
    predicted = np.array([1, 1, 2, 0, 0, 3])  # pair right: 1, 1, 1, 0, 1, 0; order: 0, 1, 1, 1
    scores = np.eye(4)[predicted]
    pair, order = _pair_scores(scores, labels)
    assert pair == pytest.approx(4 / 6)
    assert order == pytest.approx(3 / 4)


def test_demo_trains_scores_and_draws(tmp_path, capsys, monkeypatch):
    scored = []  # the checkpoints the demo loads to score
    load = demo.load_model
    monkeypatch.setattr(demo, "load_model", lambda path, *a: scored.append(path) or load(path, *a))
    data = SyntheticConfig(videos_per_class=8, val_videos_per_class=2, frames=8, num_pairs=1)
    out = tmp_path / "demo"
    results = run_demo(out, models=("sifa_resnet18", "c2d_resnet18"), epochs=1, data=data,
                       progress=False)  # fmt: skip
    rows = results["runs"]
    assert [(r["model"], r["seed"]) for r in rows] == [("sifa_resnet18", 0), ("c2d_resnet18", 0)]
    for row in rows:
        assert 0 <= row["val_top1"] <= 1 and row["train_seconds"] > 0
        assert 0 < row["gmacs"] < 0.1
        # The parameters of the model trained, with its 2-class head (not a 400-class one).
        model, _, class_names = load(resolve_checkpoint(out / row["model"]), "cpu")
        assert len(class_names) == 2
        assert row["params_m"] == sum(p.numel() for p in model.parameters()) / 1e6
    assert json.loads((out / "results.json").read_text()) == results
    assert results["seconds"] > sum(r["train_seconds"] for r in rows)
    table = (out / "results.md").read_text()
    assert table.count("\n| sifa_resnet18 | 1 |") + table.count("\n| c2d_resnet18 | 1 |") == 2
    printed = capsys.readouterr().out
    assert table in printed
    # The demo scores the checkpoint that `sifa eval --checkpoint RUN` picks (best, else last),
    # says which, and gets the same top-1 as `sifa eval` with the run's config.
    run = out / "sifa_resnet18"
    picked = resolve_checkpoint(run)
    assert picked == run / "checkpoints" / "best.safetensors"
    assert resolve_checkpoint(scored[0]) == picked and len(scored) == 2
    assert rows[0]["checkpoint"] == "sifa_resnet18/checkpoints/best.safetensors"
    assert f"sifa_resnet18 (seed 0): scoring {picked}" in printed
    report = evaluate_checkpoint(run, load_config(run / "config.yaml"), tmp_path / "eval")
    assert report["checkpoint"] == str(picked)
    assert rows[0]["val_top1"] == report["top1"]
    for name in ("training_curves", "confusion_sifa_resnet18", "confusion_c2d_resnet18"):
        assert (out / f"{name}.png").stat().st_size > 5000
    assert (out / "sifa_resnet18" / "checkpoints" / "last.safetensors").is_file()
    # Running it again reuses the data and retrains instead of refusing the old runs.
    run_demo(out, models=("c2d_resnet18",), epochs=1, data=data, progress=False)


def test_several_seeds_are_separate_runs_summarized_by_mean_min_and_max(tmp_path):
    data = SyntheticConfig(videos_per_class=8, val_videos_per_class=2, frames=8, num_pairs=1)
    out = tmp_path / "demo"
    results = run_demo(out, models=("c2d_resnet18",), epochs=1, data=data, progress=False,
                       seeds=3)  # fmt: skip
    rows = results["runs"]
    assert [r["seed"] for r in rows] == [0, 1, 2]
    assert [r["checkpoint"].split("/")[0] for r in rows] == [
        "c2d_resnet18", "c2d_resnet18-seed1", "c2d_resnet18-seed2"
    ]  # fmt: skip
    for row in rows:  # each run trained with its own seed
        config = load_config(out / row["checkpoint"].split("/")[0] / "config.yaml")
        assert config.seed == row["seed"]
    (summary,) = results["models"]
    assert summary["seeds"] == [0, 1, 2]
    for key in ("val_top1", "right_pair", "right_order_given_pair", "train_seconds"):
        values = [r[key] for r in rows]
        assert summary[key]["mean"] == pytest.approx(sum(values) / 3), key
        assert (summary[key]["min"], summary[key]["max"]) == (min(values), max(values)), key


def test_the_table_gives_mean_min_and_max_over_seeds():
    def spread(mean, low, high):
        return {"mean": mean, "min": low, "max": high}

    results = {
        "models": [{
            "model": "sifa_resnet18", "seeds": [0, 1, 2], "params_m": 1.296, "gmacs": 0.0461,
            "train_seconds": spread(80.4, 75.0, 90.2), "val_top1": spread(0.97, 0.955, 0.99),
            "right_pair": spread(1.0, 1.0, 1.0),
            "right_order_given_pair": spread(0.97, 0.955, 0.99),
        }],
        "seconds": 754.4,
    }  # fmt: skip
    assert demo.format_results(results).splitlines()[2:] == [
        "| sifa_resnet18 | 3 | 1.30 | 0.046 | 80 (75-90) | 97.0% (95.5-99.0) | 100.0% "
        "| 97.0% (95.5-99.0) |",
        "",
        "wall time 12 min 34 s, data and scoring included",
    ]


def test_reuse_keeps_runs_finished_with_the_same_settings(tmp_path, monkeypatch):
    # The figures are drawn but not written (the test above writes those of several seeds).
    monkeypatch.setattr(metrics, "save_png", lambda figure, path: Path(path))
    data = SyntheticConfig(videos_per_class=8, val_videos_per_class=2, frames=8, num_pairs=1)
    out = tmp_path / "demo"
    first = run_demo(out, models=("c2d_resnet18",), epochs=1, data=data, progress=False,
                     seeds=2)  # fmt: skip
    trained = []  # the runs trained from here on
    real_train = demo.train
    monkeypatch.setattr(demo, "train", lambda config: trained.append(config.seed)
                        or real_train(config))  # fmt: skip

    again = run_demo(out, models=("c2d_resnet18",), epochs=1, data=data, progress=False,
                     seeds=3, reuse=True)  # fmt: skip
    assert trained == [2]  # seeds 0 and 1 were finished: only seed 2 is new
    assert again["runs"][:2] == first["runs"]
    assert again["models"][0]["seeds"] == [0, 1, 2]
    # A run whose settings differ (here its epochs) is trained again, as without reuse.
    run_demo(out, models=("c2d_resnet18",), epochs=2, data=data, progress=False, reuse=True)
    run_demo(out, models=("c2d_resnet18",), epochs=2, data=data, progress=False)
    assert trained == [2, 0, 0]
    # An unreadable record is no finished run either.
    (out / "c2d_resnet18-seed1" / demo.RUN_RECORD).write_text("{truncated")
    run_demo(out, models=("c2d_resnet18",), epochs=1, data=data, progress=False, seeds=2,
             reuse=True)  # fmt: skip
    assert trained == [2, 0, 0, 0, 1]


def test_a_signal_during_a_run_stops_the_demo_instead_of_scoring_it(tmp_path, monkeypatch):
    data = SyntheticConfig(videos_per_class=8, val_videos_per_class=2, frames=8, num_pairs=1)
    out = tmp_path / "demo"
    trained = []

    def stopped_by_sigterm(config):  # what train returns when SIGTERM stops it
        trained.append(config.seed)
        return TrainResult(Path(config.output_dir), interrupted=signal.SIGTERM)

    monkeypatch.setattr(demo, "train", stopped_by_sigterm)
    with pytest.raises(demo.RunStopped) as stop:
        run_demo(out, models=("c2d_resnet18",), epochs=1, data=data, progress=False, seeds=3)
    assert stop.value.signal_number == signal.SIGTERM
    assert trained == [0]  # no next seed
    assert not (out / "results.json").exists()
    assert not (out / "c2d_resnet18" / demo.RUN_RECORD).exists()  # not reused as finished


def test_the_demo_stopped_by_sigterm_exits_as_terminated(monkeypatch, capsys):
    from sifa.cli import main

    def run_demo_stopped(*args, **kwargs):
        raise demo.RunStopped(signal.SIGTERM, Path("runs/demo/sifa_resnet18"))

    monkeypatch.setattr(demo, "run_demo", run_demo_stopped)
    assert main(["demo"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().endswith("sifa demo: terminated (SIGTERM)")
