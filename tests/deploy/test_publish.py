"""``publish_run``: the model folder's files, its card, where its numbers come from, how it is
written and pushed. Nothing reaches the Hub: the pushes go to a recording stand-in, or to an
address where nothing listens."""

from __future__ import annotations

import errno
import json
import logging
import subprocess
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, constants
from safetensors import safe_open
from safetensors.torch import load_file

import sifa
from sifa.deploy import publish as publish_module
from sifa.deploy.publish import PublishError, publish_run
from sifa.engine.checkpoint import read_checkpoint
from sifa.engine.metrics import classification_report, plot_confusion_matrix
from sifa.models.hub import read_model_folder

from hub_fixtures import CLASSES, make_run

FILES = ["README.md", "config.json", "model.safetensors"]


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run", update=3)


def write_eval_report(run: Path, *, checkpoint="best", update=3, classes=CLASSES, where="eval"):
    """A report as ``sifa eval`` writes it (and its confusion figure), of scores drawn at
    random: 12 videos, 2 clips x 1 crop."""
    generator = np.random.default_rng(0)
    scores = generator.random((12, len(classes)))
    labels = np.arange(12) % len(classes)
    report = classification_report(scores, labels, classes)
    report.update(
        split="val", dataset="/data/motion-order", checkpoint=str(run / "checkpoints" /
        f"{checkpoint}.safetensors"), checkpoint_update=update, clips=2, crops=1, views=2,
        num_unreadable=0, unreadable=[],
    )  # fmt: skip
    folder = run / where
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval_val.json").write_text(json.dumps(report))
    plot_confusion_matrix(np.asarray(report["confusion_matrix"]), classes, folder /
                          "confusion_val.png")  # fmt: skip
    return folder / "eval_val.json"


# ---------------------------------------------------------------------------------------------
# The files


def test_the_folder_holds_the_checkpoints_tensors_and_its_config(run, tmp_path):
    result = publish_run(run, tmp_path / "model")
    folder = tmp_path / "model"
    assert result.files == FILES
    assert result.checkpoint == run / "checkpoints" / "best.safetensors"
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    published, trained = load_file(folder / "model.safetensors"), load_file(result.checkpoint)
    assert published.keys() == trained.keys()
    for key, value in trained.items():
        assert published[key].dtype == value.dtype and torch.equal(published[key], value), key

    written = json.loads((folder / "config.json").read_text())
    contents = read_checkpoint(result.checkpoint)
    data = contents.config.data
    assert written["library_name"] == "sifa" and written["sifa_format"] == "sifa-model-1"
    assert written["sifa_version"] == sifa.__version__
    assert written["model_name"] == "sifa_resnet18"
    assert written["switches"] == {"base_width": 8, "dropout": 0.0}
    assert written["num_classes"] == 4 and written["class_names"] == CLASSES
    expected = {"clip_len": 8, "frame_interval": 1, "sampling": "dense", "test_clips": 2,
                "test_crops": 1, "test_crop_size": 32, "test_short_side": 32,
                "mean": list(data.mean), "std": list(data.std)}  # fmt: skip
    assert {key: written[key] for key in expected} == expected
    assert written["config"]["optim"]["lr"] == contents.config.optim.lr
    assert written["config"]["data"]["train"]["root"] == str(run / "data")
    assert read_model_folder(folder).config == written["config"]


def test_the_card_without_an_evaluation_says_so_and_states_no_number(run, tmp_path):
    publish_run(run, tmp_path / "tiny-sifa")
    card = ModelCard.load(tmp_path / "tiny-sifa" / "README.md")
    assert card.data.library_name == "sifa"
    assert card.data.pipeline_tag == "video-classification"
    assert card.data.tags == ["sifa", "resnet", "sifa_resnet18", "video-classification"]
    assert card.data.eval_results is None and card.data.metrics is None
    assert card.data.datasets is None
    text = card.text
    assert "This checkpoint has not been evaluated: no `sifa eval` report of it was found" in text
    assert "%" not in text and "top-1" not in text
    assert "sifa predict video.mp4 --checkpoint hf-hub:ORG/tiny-sifa --topk 5" in text
    assert 'sifa.create_model("sifa_resnet18", pretrained="hf-hub:ORG/tiny-sifa")' in text
    assert "`right_then_up`, `up_then_right`, `left_then_down`, `down_then_left`" in text
    assert "optimiser: adamw, learning rate 0.01" not in text  # the tiny config's lr: 0.002
    assert "optimiser: adamw, learning rate 0.002" in text
    assert "checkpoint: `best` (update 3)" in text


def test_the_card_reports_the_runs_evaluation_of_that_checkpoint(run, tmp_path):
    report_path = write_eval_report(run)
    report = json.loads(report_path.read_text())
    result = publish_run(run, tmp_path / "model")
    assert result.evaluation.path == report_path
    assert result.files == ["README.md", "config.json", "confusion.png", "model.safetensors"]
    folder = tmp_path / "model"
    figure = (folder / "confusion.png").read_bytes()
    assert figure == (run / "eval" / "confusion_val.png").read_bytes()

    card = ModelCard.load(folder / "README.md")
    assert card.data.metrics == ["accuracy"] and card.data.datasets is None
    top1, top5 = card.data.eval_results
    assert (top1.metric_type, top1.metric_value) == ("accuracy", round(100 * report["top1"], 2))
    assert (top5.metric_type, top5.metric_value) == ("top_5_accuracy", 100.0)  # 4 classes
    assert top1.metric_name == "top-1 accuracy (%, 2 clips x 1 crop)"
    assert (top1.dataset_name, top1.dataset_split) == ("motion-order", "val")
    assert top1.task_type == "video-classification"
    assert f"| {100 * report['top1']:.2f}% | 100.00% |" in card.text
    assert "`sifa eval` on the val split of motion-order (12 videos), 2 clips x 1 crop" in card.text
    assert "![Confusion matrix on val](confusion.png)" in card.text


def test_a_dataset_given_names_the_evaluations_dataset(run, tmp_path):
    given = write_eval_report(run, where="elsewhere")
    publish_run(run, tmp_path / "model", evaluation=given, dataset="org/motion-order")
    card = ModelCard.load(tmp_path / "model" / "README.md")
    assert card.data.datasets == ["org/motion-order"]
    assert card.data.eval_results[0].dataset_type == "org/motion-order"


# A report of another model -> why (after the report's path), with {run} the run folder.
NOT_THIS_MODEL = {
    "another file": (
        dict(checkpoint="last"),
        "evaluates {run}/checkpoints/last.safetensors, not {run}/checkpoints/best.safetensors",
    ),
    "an earlier save": (
        dict(update=2),
        "evaluates best.safetensors as saved at update 2, but it is now from update 3: run "
        "sifa eval again",
    ),
    "other classes": (
        dict(classes=CLASSES[::-1]),
        "was evaluated on other classes than {run}/checkpoints/best.safetensors was trained on",
    ),
}


@pytest.mark.parametrize("case", NOT_THIS_MODEL)
def test_an_evaluation_of_another_model_is_never_reported(run, tmp_path, caplog, case):
    report, problem = NOT_THIS_MODEL[case]
    path = write_eval_report(run, **report)
    problem = problem.format(run=run)
    with caplog.at_level(logging.WARNING, logger="sifa.deploy.publish"):
        result = publish_run(run, tmp_path / "found")
    assert result.evaluation is None and "confusion.png" not in result.files
    assert f"{path} {problem}; not used for the model card" in caplog.messages
    assert "has not been evaluated" in (tmp_path / "found" / "README.md").read_text()
    with pytest.raises(PublishError) as caught:
        publish_run(run, tmp_path / "given", evaluation=path)
    assert str(caught.value) == f"{path} {problem}"
    assert not (tmp_path / "given").exists()


def test_a_file_that_is_no_eval_report_is_named(run, tmp_path):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"top1": 0.5}))
    with pytest.raises(PublishError, match=r"scores\.json is not a sifa eval report \(no split, "):
        publish_run(run, tmp_path / "model", evaluation=path)


# ---------------------------------------------------------------------------------------------
# Where it is written, and how


def test_a_non_empty_destination_is_replaced_only_with_overwrite(run, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PublishError) as caught:
        publish_run(run, out)
    assert str(caught.value) == f"{out} exists and is not empty: pass --overwrite to replace it"
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    publish_run(run, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "run"]  # nothing left aside
    empty = tmp_path / "empty"
    empty.mkdir()
    assert publish_run(run, empty).files == FILES


def test_a_failed_write_leaves_the_destination_as_it_was(run, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(publish_module, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        publish_run(run, tmp_path / "new")
    out = tmp_path / "kept"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OSError, match="No space left"):
        publish_run(run, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "run"]
    assert (out / "notes.txt").read_text() == "mine"


def test_what_a_killed_publish_left_is_removed_by_the_next(run, tmp_path):
    dead = subprocess.Popen(["true"])  # a process id that no process has any more
    dead.wait()
    left = [tmp_path / f".model.{dead.pid}.tmp", tmp_path / f".model.{dead.pid}.tmp.replaced"]
    for folder in left:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    publish_run(run, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "run"]


def test_the_run_itself_and_missing_checkpoints_are_refused(run, tmp_path):
    for out in (run, run.parent):
        with pytest.raises(PublishError, match=r"holds the run .*: publish into another folder"):
            publish_run(run, out, overwrite=True)
    assert (run / "checkpoints" / "best.safetensors").is_file()
    with pytest.raises(PublishError) as caught:
        publish_run(run, tmp_path / "model", checkpoint_name="last")
    assert str(caught.value) == (
        f"{run / 'checkpoints'} has no last.safetensors: is {run} a training run folder?"
    )
    with pytest.raises(PublishError, match=r"^run folder not found: "):
        publish_run(tmp_path / "nothing", tmp_path / "model")
    with pytest.raises(PublishError, match=r"^--private applies to the repository that --push"):
        publish_run(run, tmp_path / "model", private=True)
    with pytest.raises(PublishError, match=r"^--push my org/x: not a Hub repository id \(ORG/NA"):
        publish_run(run, tmp_path / "model", push="my org/x")
    assert not (tmp_path / "model").exists()  # refused before anything was written


# ---------------------------------------------------------------------------------------------
# Pushing


class RecordingHfApi:
    """Stands in for ``huggingface_hub.HfApi``: records the calls, and what the folder held
    when it was uploaded."""

    calls: ClassVar[list] = []

    def create_repo(self, repo_id, **options):
        self.calls.append(("create_repo", repo_id, options))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **options):
        files = sorted(path.name for path in Path(folder_path).iterdir())
        self.calls.append(("upload_folder", repo_id, Path(folder_path), files))


def test_push_creates_the_repository_and_uploads_the_written_folder(run, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(RecordingHfApi, "calls", [])
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    out = tmp_path / "model"
    result = publish_run(run, out, push="org/tiny-sifa", private=True)
    assert RecordingHfApi.calls == [
        ("create_repo", "org/tiny-sifa", {"private": True, "exist_ok": True}),
        ("upload_folder", "org/tiny-sifa", out, FILES),
    ]
    assert result.url == "https://huggingface.co/org/tiny-sifa"
    text = (out / "README.md").read_text()
    assert "--checkpoint hf-hub:org/tiny-sifa --topk 5" in text and "ORG/" not in text
    assert ModelCard.load(out / "README.md").data.model_name == "tiny-sifa"


def test_an_unreachable_hub_leaves_the_folder_written_and_names_the_repo(
    run, tmp_path, monkeypatch
):
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    out = tmp_path / "model"
    with pytest.raises(PublishError) as caught:
        publish_run(run, out, push="org/tiny-sifa")
    message = str(caught.value)
    assert message.startswith("could not push to the Hub repository org/tiny-sifa (")
    assert message.endswith(f"{out} is written: push it later with `hf upload org/tiny-sifa {out}`")
    assert "\n" not in message
    assert read_model_folder(out).class_names == CLASSES
