"""The training loop: learning, exact resume, accumulation, precision, logs and checkpoints."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest
import torch

from sifa.engine import distributed
from sifa.engine.builders import build_eval_set
from sifa.engine.checkpoint import load_model, load_training_state, load_weights
from sifa.engine.evaluate import score_videos
from sifa.engine.trainer import Trainer, train

from training_fixtures import tiny_config


def test_short_run_learns_and_writes_its_records(tiny_data, tmp_path):
    # Fixed views, so that the 12 videos can be learnt by heart in a few epochs.
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=12, optim__lr=0.02,
                         data__train_crop="center", data__flip=False, eval_every=6,
                         tensorboard=True)  # fmt: skip
    result = train(config)
    history = result.history
    assert [r["epoch"] for r in history] == list(range(1, 13))
    assert result.updates == 12 * 3  # 12 videos, batch 4
    losses = [r["train_loss"] for r in history]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.75 * first, losses
    assert last < 2 * math.log(4)  # below chance (both heads' cross-entropies)
    # Validation on epochs 6 and 12; the cosine ends at min_lr = 0.
    assert [("val_top1" in r) for r in history] == ([False] * 5 + [True]) * 2
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert result.best_top1 == max(r["val_top1"] for r in history if "val_top1" in r)

    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "train" for r in lines) == 36  # log_every=1
    assert [r for r in lines if r["type"] == "epoch"] == history
    assert all(r["clips_per_s"] > 0 for r in lines if r["type"] == "train")
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "config.yaml").read_text().count("sifa_resnet18") == 1
    model, _, class_names = load_model(run)  # the folder resolves to checkpoints/best
    assert class_names == (tiny_data / "classes.txt").read_text().split()
    assert model.fc.out_features == 4
    assert load_training_state(run / "checkpoints" / "last")["epoch"] == 12


def test_unreadable_validation_videos_are_excluded_and_named(tiny_data, tmp_path, caplog):
    (tmp_path / "empty.mp4").write_bytes(b"")
    missing, empty = tmp_path / "missing.mp4", tmp_path / "empty.mp4"
    lines = (tiny_data / "val.txt").read_text().splitlines()
    (tmp_path / "val.txt").write_text("\n".join([f"{missing} 0", *lines, f"{empty} 1"]) + "\n")
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=1)
    config.data.val.annotations = str(tmp_path / "val.txt")
    with caplog.at_level(logging.WARNING, logger="sifa.engine.trainer"):
        (record,) = train(config).history
    assert record["val_unreadable"] == 2
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "sifa.engine.trainer"]
    assert "2 unreadable validation videos" in warning
    assert str(missing) in warning and str(empty) in warning
    # Validation top-1 is that of the 8 readable videos alone, with the validation views.
    model = load_model(tmp_path / "run")[0]
    readable = build_eval_set(tiny_config(tiny_data, tmp_path / "other"), "val", clips=1, crops=1)
    alone = score_videos(model, readable, distributed.setup("cpu"), batch_size=3)
    assert len(alone.labels) == len(lines) == 8 and not alone.unreadable
    top1 = float((alone.scores.argmax(1) == alone.labels).mean())
    assert record["val_top1"] == pytest.approx(top1, abs=1e-12)


def weights_of(run):
    return load_weights(run / "checkpoints" / "last")[0]


@pytest.mark.parametrize("stop_after", [4, 6])  # mid-epoch 2; exactly at the end of epoch 2
def test_resume_continues_exactly(tiny_data, tmp_path, stop_after):
    # Random crops, flips and dropout: every random stream must be restored.
    switches = {"base_width": 8, "dropout": 0.3}
    common = dict(optim__epochs=3, data__flip=True, model__switches=switches, eval_every=2)
    whole = train(tiny_config(tiny_data, tmp_path / "whole", **common))

    config = tiny_config(tiny_data, tmp_path / "parts", **common)
    first = train(config, stop_after_updates=stop_after)
    assert first.interrupted == 0 and first.updates == stop_after
    state = load_training_state(tmp_path / "parts" / "checkpoints" / "last")
    # Stopped after batch `stop_after` (3 per epoch); an epoch's end (its validation and
    # record) still to do counts as inside it.
    assert (state["epoch"], state["next_batch"]) == (
        (stop_after - 1) // 3,
        (stop_after - 1) % 3 + 1,
    )
    rest = train(config, resume=True)
    assert rest.updates == whole.updates == 9

    expected, got = weights_of(tmp_path / "whole"), weights_of(tmp_path / "parts")
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert [r["train_loss"] for r in rest.history] == pytest.approx(
        [r["train_loss"] for r in whole.history], rel=1e-5
    )


def test_resume_refuses_other_classes(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=1, eval_every=0)
    train(config, stop_after_updates=1)
    other = tmp_path / "classes.txt"
    names = (tiny_data / "classes.txt").read_text().split()
    other.write_text("\n".join(reversed(names)) + "\n")
    config.data.train.labels = str(other)
    with pytest.raises(ValueError, match="other classes"):
        Trainer(config, resume=True)


def test_accumulation_counts_updates_not_batches(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", optim__accumulate=2, eval_every=0,
                         data__batch_size=2)  # fmt: skip
    result = train(config)
    assert result.updates == 2 * 3  # 6 batches of 2 per epoch, 2 per update
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    train_lines = [json.loads(line) for line in lines if '"train"' in line]
    assert [r["update"] for r in train_lines] == list(range(1, 7))


def test_bf16_autocast_and_label_smoothing_on_cpu(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", precision="bf16", optim__epochs=1,
                         optim__label_smoothing=0.1, optim__name="sgd", optim__lr=0.01,
                         optim__nesterov=True)  # fmt: skip
    result = train(config)
    record = result.history[0]
    assert torch.isfinite(torch.tensor(record["train_loss"])) and "val_top1" in record


def test_fp16_without_cuda_is_refused(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Trainer(config)


def test_batch_larger_than_the_dataset_is_named(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", data__batch_size=13)
    with pytest.raises(ValueError, match=r"data\.batch_size=13"):
        Trainer(config)


def test_a_fresh_run_does_not_overwrite_a_run(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=1, eval_every=0)
    train(config)
    with pytest.raises(ValueError, match="already holds a run: continue it with --resume"):
        Trainer(config)
    fresh = tiny_config(tiny_data, tmp_path / "fresh")
    with pytest.raises(ValueError, match=r"nothing to resume in .*fresh: no checkpoints/last"):
        Trainer(fresh, resume=True)


def test_resumed_logs_read_as_one_run(tiny_data, tmp_path):
    """Lines logged after the checkpoint (by a run killed later) are dropped on resume."""
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=2, eval_every=0)
    train(config, stop_after_updates=2)
    log = tmp_path / "run" / "metrics.jsonl"
    log.write_text(log.read_text() + json.dumps({"type": "train", "update": 3}) + "\n")
    train(config, resume=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["update"] for r in records if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]


class _SavesSpy:
    """Records ``(name, update, epoch, next_batch)`` of every checkpoint the trainer writes."""

    def __init__(self, monkeypatch) -> None:
        from sifa.engine import trainer

        self.saves = []
        save = trainer.save_checkpoint

        def recording_save(folder, name, model, **kwargs):
            state = kwargs.get("training_state") or {}
            self.saves.append((name, kwargs["update"], state.get("epoch"), state.get("next_batch")))
            return save(folder, name, model, **kwargs)

        monkeypatch.setattr(trainer, "save_checkpoint", recording_save)


@pytest.mark.parametrize(
    ("setting", "mid_epoch"),
    [
        ({"checkpoint_every": 4}, [(4, 0, 4), (8, 1, 2)]),  # updates 4, 8 (12 ends an epoch)
        ({"checkpoint_minutes": 25}, [(3, 0, 3), (9, 1, 3)]),  # 10 minutes per update
    ],
)
def test_last_is_saved_inside_epochs_with_its_position(tiny_data, tmp_path, monkeypatch,
                                                       setting, mid_epoch):  # fmt: skip
    from types import SimpleNamespace

    from sifa.engine import trainer

    clock = [0.0]  # minutes of a fake clock that each update moves on by 10
    monkeypatch.setattr(trainer, "time", SimpleNamespace(
        monotonic=lambda: 60 * clock[0], perf_counter=trainer.time.perf_counter))  # fmt: skip
    step = trainer.Trainer._step

    def step_of_ten_minutes(self):
        step(self)
        clock[0] += 10

    monkeypatch.setattr(trainer.Trainer, "_step", step_of_ten_minutes)
    spy = _SavesSpy(monkeypatch)
    options = {"checkpoint_minutes": 0, **setting}
    # 12 videos in batches of 2: 6 updates per epoch.
    config = tiny_config(tiny_data, tmp_path / "run", data__batch_size=2, eval_every=0,
                         **options)  # fmt: skip
    train(config)
    ends = [(6, 1, 0), (12, 2, 0)]
    assert spy.saves == [("last", *save) for save in sorted(mid_epoch + ends)]


def test_the_demo_saves_at_epoch_ends_and_runs_every_30_minutes_by_default():
    from omegaconf import OmegaConf

    from sifa.engine.config import TrainConfig
    from sifa.engine.demo import DEMO_RECIPE

    defaults = OmegaConf.structured(TrainConfig)
    assert (defaults.checkpoint_minutes, defaults.checkpoint_every) == (30, 0)
    assert DEMO_RECIPE["checkpoint_minutes"] == 0 and "checkpoint_every" not in DEMO_RECIPE


def test_a_full_disk_stops_training_with_one_line_and_keeps_the_last_checkpoint(
    tiny_data, tmp_path, monkeypatch, capsys
):
    from sifa import files
    from sifa.cli import main

    from training_fixtures import write_config

    path = write_config(tiny_config(tiny_data, tmp_path / "run", eval_every=0), tmp_path / "a.yaml")
    full_disk = tmp_path / "full_disk"
    full_disk.symlink_to("/dev/full")
    temporary_path = files.temporary_path
    saves = []

    def second_save_on_a_full_disk(target):  # epoch 2's weights go to /dev/full
        saves.append(target.name)
        second = target.name == "last.safetensors" and saves.count("last.safetensors") == 2
        return full_disk if second else temporary_path(target)

    monkeypatch.setattr(files, "temporary_path", second_save_on_a_full_disk)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    assert err.splitlines()[-1] == (
        f"sifa train: error: cannot write {last}: No space left on device (ENOSPC); the "
        "previous last checkpoint is kept"
    )
    assert "Traceback" not in err
    assert load_training_state(last)["update"] == 3  # the end of epoch 1


def test_a_disk_that_fills_inside_the_state_file_gives_one_line_and_leaves_nothing(
    tiny_data, tmp_path
):
    """A real ``sifa train`` whose files may not grow past a limit (``ulimit -f``) between
    the weights' size and the training state's: ``torch.save`` fails part-way through the
    first state file. The cause (EFBIG) is named in one line, the message does not claim a
    previous checkpoint, and no part-written or orphaned file stays."""
    import resource
    import subprocess
    import sys

    from sifa import create_model

    from training_fixtures import write_config

    config = tiny_config(tiny_data, tmp_path / "run", eval_every=0)
    path = write_config(config, tmp_path / "a.yaml")
    model = create_model(config.model.name, num_classes=4, **config.model.switches)
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    limit = int(1.5 * weight_bytes)  # the weights fit; the state (AdamW: 2x more) does not

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = subprocess.run(
        [sys.executable, "-m", "sifa", "train", str(path)], capture_output=True, text=True,
        preexec_fn=limit_file_size, timeout=300,
        env={**os.environ, "SIFA_BACKEND": "reference", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    checkpoints = tmp_path / "run" / "checkpoints"
    state = checkpoints / "last.state-00000003.pt"
    assert process.returncode == 2, process.stderr
    assert process.stderr.splitlines()[-1] == (
        f"sifa train: error: cannot write {state}: File too large (EFBIG); no last checkpoint "
        "was saved"
    )
    assert "Traceback" not in process.stderr
    assert list(checkpoints.iterdir()) == []


def test_mixup_and_cutmix_train_on_soft_targets_and_resume_bit_exactly(tiny_data, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    from sifa.engine import trainer

    calls = {}  # run name -> [(labels before mixing, targets, main logits)] per micro-batch
    run = ["whole"]
    mixer_call, loss = trainer.BatchMixer.__call__, trainer.classification_loss

    def recording_mixer(self, clips, labels, *, generator):
        calls.setdefault(run[0], []).append([labels.clone()])
        return mixer_call(self, clips, labels, generator=generator)

    def recording_loss(output, target, **kwargs):
        calls[run[0]][-1] += [target.clone(), output[0].detach().clone()]
        return loss(output, target, **kwargs)

    monkeypatch.setattr(trainer.BatchMixer, "__call__", recording_mixer)
    monkeypatch.setattr(trainer, "classification_loss", recording_loss)
    # Dropout too: mixing must leave the global random stream as an uninterrupted run has it.
    common = dict(optim__epochs=2, eval_every=0, data__mixup=0.8, data__cutmix=1.0,
                  model__switches={"base_width": 8, "dropout": 0.3})  # fmt: skip
    whole = train(tiny_config(tiny_data, tmp_path / "whole", **common))

    batches = calls["whole"]
    assert len(batches) == 6  # 2 epochs of 3 micro-batches of 4
    for _, targets, _ in batches:
        assert targets.shape == (4, 4) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert any(targets.max() < 1 for _, targets, _ in batches)  # some batches were mixed
    # Training top-1: each clip's prediction against its own label from before mixing.
    for epoch, record in enumerate(whole.history):
        hits = [(logits.argmax(1) == labels).double().mean() for labels, _, logits in
                batches[3 * epoch : 3 * epoch + 3]]  # fmt: skip
        assert record["train_top1"] == pytest.approx(float(sum(hits) / 3), abs=1e-12)
        assert math.isfinite(record["train_loss"])

    run[0] = "parts"
    config = tiny_config(tiny_data, tmp_path / "parts", **common)
    assert train(config, stop_after_updates=4).updates == 4  # stopped inside epoch 2
    assert train(config, resume=True).updates == 6
    for (labels, targets, _), (got_labels, got_targets, _) in zip(
        batches, calls["parts"], strict=True
    ):
        assert torch.equal(got_labels, labels) and torch.equal(got_targets, targets)
    expected, got = weights_of(tmp_path / "whole"), weights_of(tmp_path / "parts")
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.fixture
def restore_determinism():
    """`deterministic: true` sets process-wide switches: put them back after the test."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.deterministic,
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)  # fmt: skip
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.mkldnn.deterministic = before[1]
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]


def test_deterministic_training_runs_and_repeats_bit_for_bit(tiny_data, tmp_path,
                                                             restore_determinism):  # fmt: skip
    """Every operation of SIFA-Net's training has a deterministic kernel here (none raises
    under torch.use_deterministic_algorithms), and two runs give the same weights."""
    weights = []
    for run in ("a", "b"):
        config = tiny_config(tiny_data, tmp_path / run, eval_every=0, deterministic=True)
        result = train(config, stop_after_updates=4)
        assert result.updates == 4
        weights.append(load_weights(tmp_path / run / "checkpoints" / "last.safetensors")[0])
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.mkldnn.deterministic and torch.backends.cudnn.deterministic
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
