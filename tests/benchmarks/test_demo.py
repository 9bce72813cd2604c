"""`sifa benchmark demo`: the perturbed copy of the data and the goals' verdicts (the full
benchmark trains for tens of minutes; its parts are checked here)."""

from __future__ import annotations

import pytest

from sifa.benchmarks.demo import format_verdicts, perturbed_copy, verdicts
from sifa.data.decoding import open_video


def test_the_perturbed_copy_has_the_same_videos_a_few_grey_levels_off(tiny_data, tmp_path):
    copy = perturbed_copy(tiny_data, tmp_path / "copy", crf=35, progress=False)
    for name in ("train.txt", "val.txt", "classes.txt"):
        assert (copy / name).read_text() == (tiny_data / name).read_text(), name
    lines = (tiny_data / "train.txt").read_text().splitlines()
    lines += (tiny_data / "val.txt").read_text().splitlines()
    differences = []
    for line in lines:
        relative = line.rsplit(maxsplit=1)[0]
        assert (copy / relative).read_bytes() != (tiny_data / relative).read_bytes(), relative
        with open_video(tiny_data / relative) as original, open_video(copy / relative) as other:
            assert other.info == original.info
            frames = range(original.info.num_frames)
            a, b = (r.read(frames).float() for r in (original, other))
        differences.append(float((a - b).abs().mean()))
    assert min(differences) > 0 and max(differences) < 12, differences


def results_of(scores: dict[str, list[float]]) -> dict:
    runs = [{"model": model, "seed": seed, "val_top1": value}
            for model, values in scores.items() for seed, value in enumerate(values)]  # fmt: skip
    return {"runs": runs, "models": [{"model": model} for model in scores]}


@pytest.mark.parametrize(
    ("sifa", "c2d", "met", "worst"),
    [
        ([0.96, 0.99, 0.955], [0.5, 0.515], (True, True), (0.955, 0.515)),
        ([0.96, 0.94, 0.99], [0.5, 0.62], (False, False), (0.94, 0.62)),
        ([0.95], [0.60], (True, True), (0.95, 0.60)),  # the goals' own values pass
    ],
)
def test_every_run_is_held_to_its_models_goal(sifa, c2d, met, worst):
    results = results_of({"sifa_resnet18": sifa, "c2d_resnet18": c2d, "tsm_resnet18": [0.1]})
    found = verdicts("original", results, 0.95, 0.60)
    assert [(v.model, v.goal) for v in found] == [
        ("sifa_resnet18", ">= 95%"), ("c2d_resnet18", "<= 60%")
    ]  # fmt: skip
    assert tuple(v.met for v in found) == met
    assert tuple(v.worst for v in found) == pytest.approx(worst)
    text = format_verdicts(found, len(sifa))
    assert text.count("MISSED") == met.count(False)
    assert f"(worst run {100 * worst[0]:.1f}%)" in text


def test_the_repeat_benchmark_compares_copies_bit_for_bit(tiny_data, tmp_path):
    """benchmarks/repeat.py on the tiny config: two copies of one seed, loss by loss."""
    import subprocess
    import sys
    from pathlib import Path

    from training_fixtures import tiny_config, write_config

    config = write_config(tiny_config(tiny_data, tmp_path / "run"), tmp_path / "run.yaml")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "repeat.py"
    result = subprocess.run(
        [sys.executable, str(script), str(config), "--copies", "2", "--concurrent", "1",
         "--updates", "2", "--threads", "1", "seed=3"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "2 copies, 1 at a time, 1 threads each, 2 updates: 2 bit-equal to copy 0"
    )
    assert not (tmp_path / "run").exists()  # the copies trained in a scratch folder
