"""``sifa publish`` and the commands on what it writes: a run evaluated, published, and the
folder (and its ``hf-hub:`` id, from a local cache) predicting what the run predicts; every
error one ``sifa COMMAND: error: ...`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard, constants

from sifa.cli import main
from sifa.models.hub import CONFIG_FILE

from hub_fixtures import lay_out_hub_cache, make_run
from training_fixtures import tiny_config, write_config


@pytest.fixture(scope="module")
def evaluated(tiny_data, tmp_path_factory):
    """``(run, config file, video)``: a small run on the tiny data, evaluated by ``sifa eval``
    into ``RUN/eval``."""
    root = tmp_path_factory.mktemp("evaluated")
    run = make_run(root / "run", tiny_data)
    config = write_config(tiny_config(tiny_data, run), root / "run.yaml")
    assert main(["eval", str(config), "--checkpoint", str(run)]) == 0
    video = tiny_data / (tiny_data / "val.txt").read_text().split()[0]
    return run, config, video


def predict_json(checkpoint, video, capsys) -> list:
    capsys.readouterr()
    argv = ["predict", str(video), "--checkpoint", str(checkpoint), "--json", "--device", "cpu"]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_a_published_run_predicts_and_evaluates_as_the_run(evaluated, tmp_path, capsys):
    run, config, video = evaluated
    report = json.loads((run / "eval" / "eval_val.json").read_text())
    assert (report["clips"], report["crops"], report["views"]) == (2, 1, 2)
    assert report["checkpoint_update"] == 3 and report["dataset"].endswith("synthetic0")

    out = tmp_path / "tiny-sifa"
    capsys.readouterr()
    assert main(["publish", str(run), str(out)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line == (
        f"wrote {out}/ (README.md, config.json, confusion.png, model.safetensors) from "
        f"{run / 'checkpoints' / 'best.safetensors'}; the card reports "
        f"{run / 'eval' / 'eval_val.json'}: top-1 {100 * report['top1']:.2f}%, top-5 "
        f"{100 * report['top5']:.2f}% (2 clips x 1 crop)"
    )
    top1, top5 = ModelCard.load(out / "README.md").data.eval_results
    assert top1.metric_value == round(100 * report["top1"], 2)
    assert top5.metric_value == round(100 * report["top5"], 2)
    assert top1.dataset_name == "synthetic0"

    assert predict_json(out, video, capsys) == predict_json(run, video, capsys)
    assert main(["eval", str(config), "--checkpoint", str(out), "--out", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "eval_val.json").read_text())
    assert again["checkpoint"] == str(out / "model.safetensors")
    assert again["checkpoint_update"] is None
    for key in ("top1", "top5", "confusion_matrix", "per_class_accuracy"):
        assert again[key] == report[key], key


def test_a_hub_id_predicts_offline_in_a_fresh_process(evaluated, tmp_path, capsys):
    """HF_HUB_OFFLINE, HF_HUB_CACHE and HF_ENDPOINT as a user sets them: the cached model
    loads, and an endpoint where nothing listens is never needed."""
    run, _, video = evaluated
    assert main(["publish", str(run), str(tmp_path / "model")]) == 0
    lay_out_hub_cache(tmp_path / "cache", "org/tiny-sifa", tmp_path / "model")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"),
               HF_ENDPOINT="http://127.0.0.1:9", OMP_NUM_THREADS="1")  # fmt: skip
    argv = ["predict", str(video), "--checkpoint", "hf-hub:org/tiny-sifa", "--json",
            "--device", "cpu"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "sifa", *argv], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    snapshot = next((tmp_path / "cache" / "models--org--tiny-sifa" / "snapshots").iterdir())
    assert f"checkpoint {snapshot / 'model.safetensors'}" in done.stderr.splitlines()
    assert json.loads(done.stdout) == predict_json(run, video, capsys)


# ---------------------------------------------------------------------------------------------
# Errors: one line each


@pytest.fixture
def small_run(tmp_path):
    return make_run(tmp_path / "run")


def inconsistent_folder(run, tmp_path):
    main(["publish", str(run), str(tmp_path / "model")])
    written = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    written["clip_len"] = 16
    (tmp_path / "model" / CONFIG_FILE).write_text(json.dumps(written))
    return tmp_path / "model"


def not_empty(run, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    return tmp_path / "model"


# (argv, the message after "sifa COMMAND: error: "), {run} and {tmp} the folders of the test
ERRORS = {
    "publish into a folder in use": (
        lambda run, tmp: ["publish", str(run), str(not_empty(run, tmp))],
        "{tmp}/model exists and is not empty: pass --overwrite to replace it",
    ),
    "publish what is no run": (
        lambda run, tmp: ["publish", str(tmp / "nothing"), str(tmp / "model")],
        "run folder not found: {tmp}/nothing",
    ),
    "publish an evaluation of another checkpoint": (
        lambda run, tmp: ["publish", str(run), str(tmp / "model"), "--eval",
                          str(evaluation_of_last(run))],
        "{run}/eval/eval_val.json evaluates {run}/checkpoints/last.safetensors, not "
        "{run}/checkpoints/best.safetensors",
    ),
    "publish to a malformed repository id": (
        lambda run, tmp: ["publish", str(run), str(tmp / "model"), "--push", "my org/x"],
        "--push my org/x: not a Hub repository id (ORG/NAME): ",
    ),
    "a hand-edited model folder": (
        lambda run, tmp: ["predict", "clip.mp4", "--checkpoint",
                          str(inconsistent_folder(run, tmp))],
        "{tmp}/model/config.json: clip_len is 16 but config.data.clip_len is 8; loading uses "
        "config.data.clip_len, so the two must agree (was the file edited by hand?)",
    ),
    "a malformed hub id": (
        lambda run, tmp: ["export", "--checkpoint", "hf-hub:org/na me", "--format", "onnx"],
        "hf-hub:org/na me is not a Hub model id (hf-hub:ORG/NAME[@REVISION]): ",
    ),
}  # fmt: skip


def evaluation_of_last(run):
    from sifa.engine.metrics import classification_report

    report = classification_report([[0.9, 0.05, 0.03, 0.02]], [0], ["a", "b", "c", "d"])
    report.update(split="val", checkpoint=str(run / "checkpoints" / "last.safetensors"), views=1)
    (run / "eval").mkdir()
    (run / "eval" / "eval_val.json").write_text(json.dumps(report))
    return run / "eval" / "eval_val.json"


@pytest.mark.parametrize("case", ERRORS)
def test_every_error_is_one_line(small_run, tmp_path, capsys, case):
    make_argv, expected = ERRORS[case]
    argv = make_argv(small_run, tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    expected = expected.format(run=small_run, tmp=tmp_path)
    assert line.startswith(f"sifa {argv[0]}: error: {expected}")


def test_a_hub_id_not_cached_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["predict", "clip.mp4", "--checkpoint", "hf-hub:org/absent"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"sifa predict: error: hf-hub:org/absent is not in the local Hub cache ({tmp_path}) and "
        "HF_HUB_OFFLINE is set: "
    )


def test_a_push_to_an_unreachable_hub_is_one_line_and_the_folder_stays(
    small_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    out = tmp_path / "model"
    assert main(["publish", str(small_run), str(out), "--push", "org/tiny-sifa"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("sifa publish: error: could not push to the Hub repository org/tiny-")
    assert line.endswith(f"push it later with `hf upload org/tiny-sifa {out}`")
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors"]
