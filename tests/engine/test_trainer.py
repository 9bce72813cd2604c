"""The training loop: learning, exact resume, accumulation, precision, logs and checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sifa.engine.checkpoint import load_model, load_training_state, load_weights
from sifa.engine.trainer import Trainer, train

from training_fixtures import tiny_config


def test_short_run_learns_and_writes_its_records(tiny_data, tmp_path):
    # Fixed views, so that the 12 videos can be learnt by heart in a few epochs.
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=24, optim__lr=0.005,
                         data__train_crop="center", data__flip=False, eval_every=12,
                         tensorboard=True)  # fmt: skip
    result = train(config)
    history = result.history
    assert [r["epoch"] for r in history] == list(range(1, 25))
    assert result.updates == 24 * 3  # 12 videos, batch 4
    losses = [r["train_loss"] for r in history]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.75 * first, losses
    assert last < 2 * math.log(4)  # below chance (both heads' cross-entropies)
    # Validation on epochs 12 and 24; the cosine ends at min_lr = 0.
    assert [("val_top1" in r) for r in history] == ([False] * 11 + [True]) * 2
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert result.best_top1 == max(r["val_top1"] for r in history if "val_top1" in r)

    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "train" for r in lines) == 72  # log_every=1
    assert [r for r in lines if r["type"] == "epoch"] == history
    assert all(r["clips_per_s"] > 0 for r in lines if r["type"] == "train")
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "config.yaml").read_text().count("sifa_resnet18") == 1
    model, _, class_names = load_model(run)  # the folder resolves to checkpoints/best
    assert class_names == (tiny_data / "classes.txt").read_text().split()
    assert model.fc.out_features == 4
    assert load_training_state(run / "checkpoints" / "last")["epoch"] == 24


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
