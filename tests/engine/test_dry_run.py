"""`sifa train --dry-run`: measured rates, the estimate's formula, and nothing written."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest
import torch

from sifa.cli import main
from sifa.engine.checkpoint import load_weights
from sifa.engine.dry_run import (
    dry_run,
    duration,
    estimate,
    format_dry_run,
    rate,
    training_share,
)

from training_fixtures import tiny_config, write_config


@pytest.fixture(autouse=True)
def one_thread():
    """The configs below ask for one torch thread (steady timings on a busy machine); the
    trainer sets it for the whole process, so the session's setting comes back after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tree(*folders) -> dict:
    """Every file and folder under ``folders``: its kind, size, modification time and hash."""
    state = {}
    for folder in folders:
        state[str(folder)] = folder.exists()
        for path in sorted(folder.rglob("*")) if folder.exists() else []:
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            state[str(path)] = (path.is_dir(), stat.st_size, stat.st_mtime_ns, digest)
    return state


def test_rates_and_the_estimate_from_the_reports_own_numbers(tiny_data, tmp_path):
    # One validation video per batch: 8 videos are enough for the two timed validations.
    config = tiny_config(tiny_data, tmp_path / "run", threads=1, data__val_batch_size=1)
    before = tree(tmp_path, tiny_data)
    report = dry_run(config, updates=2)
    assert tree(tmp_path, tiny_data) == before  # not even output_dir made

    assert (report.train_videos, report.val_videos, report.val_views) == (12, 8, 1)
    assert (report.updates_per_epoch, report.clips_per_update, report.epochs) == (3, 4, 2)
    assert report.device == "cpu (1 thread)" and report.precision == "fp32"
    assert report.parameters == report.trainable_parameters > 0
    for phase in ("loader", "model", "training"):
        assert getattr(report, f"{phase}_clips_per_s") > 0, phase
    assert report.setup_s > 0 and report.loader_startup_s > 0
    slower = min(report.loader_clips_per_s, report.model_clips_per_s)
    assert report.limited_by == ("loader" if report.loader_clips_per_s == slower else "model")
    # A warm-up update, then 2 timed real steps and 2 timed model-alone updates.
    assert len(report.losses) == 5 and report.loss_finite
    assert report.main_peak_mib > 100
    assert report.worker_peak_mib is None and report.cuda_peak_allocated_mib is None

    # The estimate is at the rate of the real steps.
    per_update = 4 / report.training_clips_per_s
    assert report.update_s == pytest.approx(per_update)
    assert report.train_epoch_s == pytest.approx(3 * per_update)
    # num_workers 0: were the loader and the model independent, their times would add up.
    independent = 4 / report.loader_clips_per_s + 4 / report.model_clips_per_s
    assert training_share(report) == pytest.approx(independent / per_update)
    (small, t_small), (large, t_large) = report.validation_timings  # after a warm-up video
    assert (small, large) == (1, 3)
    if t_large > t_small:
        validation = t_small + (8 - small) * (t_large - t_small) / (large - small)
    else:
        validation = 8 * t_large / large
    assert report.validation_s == pytest.approx(validation)
    assert report.validations == 2  # eval_every 1: after each epoch
    run = report.setup_s + report.loader_startup_s + 2 * report.train_epoch_s + 2 * validation
    assert report.run_s == pytest.approx(run)

    text = " ".join(format_dry_run(report).split())  # long lines wrap
    assert "12 training videos, 8 validation videos x 1 view" in text
    assert "3 per epoch x 2 epochs, 4 clips each (batch 4 x accumulate 1)" in text
    assert "num_workers 0: the main process loads, then computes" in text
    assert f"= 4 clips at {rate(report.training_clips_per_s)}, the rate of real steps" in text


def test_json_with_workers_and_accumulation_leaves_an_existing_run_as_it_was(
    tiny_data, trained_run, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    checkpoint = run / "checkpoints" / "last.safetensors"
    weights, _ = load_weights(checkpoint)
    # With mixup, as the trainer mixes every micro-batch.
    config = tiny_config(tiny_data, run, threads=1, eval_every=0, data__num_workers=1,
                         optim__accumulate=2, data__mixup=0.8)  # fmt: skip
    path = write_config(config, tmp_path / "run.yaml")
    before = tree(tmp_path)

    assert main(["train", str(path), "--dry-run", "--dry-run-updates", "1", "--json"]) == 0
    assert tree(tmp_path) == before
    after, _ = load_weights(checkpoint)
    assert weights.keys() == after.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, after[name]), name

    report = json.loads(capsys.readouterr().out)
    assert report["val_videos"] is None and report["validations"] == 0
    assert (report["updates_per_epoch"], report["clips_per_update"]) == (2, 8)  # 3 batches / 2
    assert report["worker_peak_mib"] > 0 and report["workers_private_mib"] > 0
    assert report["update_s"] == pytest.approx(8 / report["training_clips_per_s"])
    assert report["train_epoch_s"] == pytest.approx(2 * report["update_s"])
    run_s = report["setup_s"] + report["loader_startup_s"] + 2 * report["train_epoch_s"]
    assert report["run_s"] == pytest.approx(run_s)
    assert len(report["losses"]) == 2 * 3  # warm-up, real step, model alone; 2 micro-batches each


def test_videos_kept_in_memory_make_the_later_epochs_cheaper(tiny_data, tmp_path, monkeypatch):
    # data.cache_videos: the first epoch decodes; later epochs and validations read memory.
    from sifa.data.datasets import VideoClipDataset

    config = tiny_config(tiny_data, tmp_path / "run", threads=1, data__val_batch_size=1,
                         data__cache_videos=True, optim__epochs=3)  # fmt: skip
    opened = []
    real_open = VideoClipDataset.open
    monkeypatch.setattr(VideoClipDataset, "open", lambda s, r: opened.append(r) or real_open(s, r))
    report = dry_run(config, updates=2)
    # Every video opened at most once per dataset (training, validation): the rest was memory.
    assert len(opened) == len(set(map(id, opened))) <= 12 + 8

    assert report.cached_loader_clips_per_s > 0
    model = 4 / report.model_clips_per_s
    first = 3 * 4 / report.training_clips_per_s  # real steps, decoding
    # Later epochs: the independent formula at the in-memory rate, slowed down as much as
    # the real steps were slowed down from it at the decoding rate.
    slowdown = (4 / report.training_clips_per_s) / (4 / report.loader_clips_per_s + model)
    later = 3 * max(1, slowdown) * (4 / report.cached_loader_clips_per_s + model)
    assert report.train_epoch_s == pytest.approx(first)
    assert report.cached_epoch_s == pytest.approx(later)
    assert len(report.validation_timings) == 2  # the decoding validation, on two parts
    assert report.cached_validation_s > 0 and report.validations == 3
    run = (report.setup_s + report.loader_startup_s + first + 2 * later
           + report.validation_s + 2 * report.cached_validation_s)  # fmt: skip
    assert report.run_s == pytest.approx(run)
    text = " ".join(format_dry_run(report).split())
    assert "decoding the videos; later ones" in text and "from memory (data.cache_videos" in text

    # A loader timed while the machine was busy (real steps then outrun the loader alone):
    # later epochs are still no faster than the model and the memory reads alone.
    disturbed = dataclasses.replace(report, loader_clips_per_s=report.loader_clips_per_s / 1000,
                                    notes=[])  # fmt: skip
    estimate(disturbed)
    assert disturbed.cached_epoch_s == pytest.approx(3 * (4 / report.cached_loader_clips_per_s
                                                          + model))  # fmt: skip
    assert any("the timings disagree" in note for note in disturbed.notes)


def test_videos_kept_by_loader_workers_are_estimated_at_the_decoding_rate(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", threads=1, eval_every=0,
                         data__cache_videos=True, data__num_workers=1)  # fmt: skip
    report = dry_run(config, updates=1)
    assert report.cached_loader_clips_per_s is None and report.cached_epoch_s is None
    assert report.run_s == pytest.approx(
        report.setup_s + report.loader_startup_s + 2 * report.train_epoch_s
    )
    assert any("each worker decodes and keeps its own copy" in note for note in report.notes)


def test_the_command_prints_the_table(tiny_data, tmp_path, capsys):
    config = tiny_config(tiny_data, tmp_path / "run", threads=1, eval_every=0)
    path = write_config(config, tmp_path / "run.yaml")
    assert main(["train", str(path), "--dry-run", "--dry-run-updates", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dry run: nothing written to {tmp_path / 'run'}")
    for label in ("device", "model", "data", "updates", "loader", "limit", "training", "memory",
                  "update", "epoch", "run"):  # fmt: skip
        assert f"\n  {label} " in out, label
    assert "loss finite" in out and "no validation during training" in out
    assert not (tmp_path / "run").exists()


def test_a_loss_that_is_not_finite_fails(tiny_data, tmp_path, capsys, monkeypatch):
    from sifa.engine import trainer as module  # the step the dry run times is the trainer's

    loss = module.classification_loss
    monkeypatch.setattr(module, "classification_loss", lambda *a, **k: loss(*a, **k) * torch.nan)
    config = tiny_config(tiny_data, tmp_path / "run", threads=1, eval_every=0)
    path = write_config(config, tmp_path / "run.yaml")
    assert main(["train", str(path), "--dry-run", "--dry-run-updates", "1"]) == 1
    assert "loss NOT FINITE" in capsys.readouterr().out


def test_config_errors_are_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    config = tiny_config(tiny_data, tmp_path / "run")
    config.data.train.annotations = str(tmp_path / "missing.txt")
    path = write_config(config, tmp_path / "run.yaml")
    assert main(["train", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == f"sifa train: error: annotation file not found: {tmp_path / 'missing.txt'}\n"
    assert not (tmp_path / "run").exists()

    for flags, message in (
        (["--json"], "--json goes with --dry-run"),
        (["--dry-run", "--resume"], "--dry-run times a fresh start"),
    ):
        assert main(["train", str(path), *flags]) == 2
        assert message in capsys.readouterr().err

    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun
    assert main(["train", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "measures one process, not 2: run it without torchrun" in err
    assert err.count("\n") == 1


def test_every_problem_the_config_shows_before_the_model_is_built_comes_in_one_line(
    tiny_data, tmp_path, capsys
):
    """fp16 on a CPU, a batch larger than the data and a missing validation list: one error
    naming all three, for a dry run and for training alike."""
    config = tiny_config(tiny_data, tmp_path / "run", precision="fp16", device="cpu",
                         data__batch_size=24)  # fmt: skip
    config.data.val.annotations = str(tmp_path / "missing_val.txt")
    path = write_config(config, tmp_path / "run.yaml")
    for flags in (["--dry-run"], []):
        assert main(["train", str(path), *flags]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line == (
            "sifa train: error: 3 problems with the config: (1) precision fp16 needs a CUDA "
            "device; use bf16 on the CPU; (2) annotation file not found: "
            f"{tmp_path / 'missing_val.txt'}; (3) data.batch_size=24 x 1 processes is more than "
            "the 12 training videos"
        )
    assert not (tmp_path / "run").exists()


def test_a_missing_data_root_is_one_error_not_a_warning_per_video(tiny_data, tmp_path, capsys):
    config = tiny_config(tiny_data, tmp_path / "run", eval_every=0)
    config.data.train.root = str(tmp_path / "gone")
    path = write_config(config, tmp_path / "run.yaml")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"sifa train: error: data root folder not found: {tmp_path / 'gone'} (the videos of "
        f"{tiny_data / 'train.txt'} are found under it)\n"
    )


def test_the_phases_show_their_progress(tiny_data, tmp_path, capsys):
    config = tiny_config(tiny_data, tmp_path / "run", threads=1, data__val_batch_size=1)
    dry_run(config, updates=1, progress=True)
    err = capsys.readouterr().err
    for phase in ("building the run", "the loader alone", "real training steps",
                  "the model alone", "timing validation"):  # fmt: skip
        assert f"dry run: {phase}" in err, phase


def test_loader_workers_beyond_the_cores_are_noted(tiny_data, tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    config = tiny_config(tiny_data, tmp_path / "run", threads=1, eval_every=0,
                         data__num_workers=2)  # fmt: skip
    report = dry_run(config, updates=1)
    expected = (
        "data.num_workers=2 on 2 CPU cores: the loader's workers and the model compete for "
        "them; num_workers 1 or fewer"
    )
    assert any(note.startswith(expected) for note in report.notes), report.notes


@pytest.mark.parametrize(
    ("clips_per_s", "text"),
    [(250.0, "250 clips/s"), (12.34, "12.3 clips/s"), (2.345, "2.35 clips/s"),
     (1.0, "1 clip/s"), (0.1, "1 clip every 10 s"), (0.4, "1 clip every 2.5 s"),
     (1 / 125, "1 clip every 2 min 05 s")],
)  # fmt: skip
def test_small_rates_read_as_seconds_per_clip(clips_per_s, text):
    assert rate(clips_per_s) == text
    assert duration(125) == "2 min 05 s"
