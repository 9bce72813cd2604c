"""Checkpoints: safetensors weights + weights_only state, atomic, pickle-free, consistent."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

import sifa
from sifa.engine.checkpoint import (
    load_model,
    load_training_state,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from sifa.engine.config import TrainConfig, to_yaml
from sifa.models.weights import CheckpointError

CLASSES = ["a", "b", "c"]


def small_model():
    torch.manual_seed(0)
    return sifa.create_model("c2d_resnet18", num_classes=3, base_width=8)


def run_config():
    config = OmegaConf.structured(TrainConfig)
    config.model.name = "c2d_resnet18"
    config.model.switches = {"base_width": 8}
    return config


def save(folder, model, update=5, state=None):
    return save_checkpoint(
        folder, "last", model, config_yaml=to_yaml(run_config()), class_names=CLASSES,
        update=update, training_state=state if state is not None else {"epoch": 1},
    )  # fmt: skip


def test_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path):
    model = small_model()
    path = save(tmp_path / "checkpoints", model)
    assert path.name == "last.safetensors"
    loaded, config, class_names = load_model(tmp_path / "checkpoints" / "last")
    assert class_names == CLASSES and config.model.name == "c2d_resnet18"
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    state = load_training_state(path)
    assert state["epoch"] == 1 and state["update"] == 5
    # The run folder resolves to its checkpoint; nothing temporary is left behind.
    assert resolve_checkpoint(tmp_path) == path
    assert sorted(os.listdir(path.parent)) == ["last.safetensors", "last.state.pt"]


class _RunsCode:
    """Unpickling this calls ``os.system``: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_state_that_needs_pickled_code_is_refused_and_not_run(tmp_path):
    path = save(tmp_path, small_model())
    marker = tmp_path / "code_ran"
    state = {"update": 5, "epoch": 1, "payload": _RunsCode(marker)}
    with open(tmp_path / "last.state.pt", "wb") as handle:
        torch.save(state, handle)
    with pytest.raises(CheckpointError, match=r"last\.state\.pt needs pickled code"):
        load_training_state(path)
    assert not marker.exists()


def test_state_from_another_update_is_refused(tmp_path):
    path = save(tmp_path, small_model(), update=5)
    save_checkpoint(
        tmp_path / "other", "last", small_model(), config_yaml="", class_names=CLASSES, update=9,
        training_state={"epoch": 2},
    )  # fmt: skip
    os.replace(tmp_path / "other" / "last.state.pt", tmp_path / "last.state.pt")
    with pytest.raises(CheckpointError, match=r"update 9.*does not belong.*update 5"):
        load_training_state(path)


def test_foreign_and_broken_files_are_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "imagenet.safetensors"))
    with pytest.raises(CheckpointError, match="not a sifa training checkpoint"):
        load_weights(tmp_path / "imagenet.safetensors")
    (tmp_path / "torn.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(CheckpointError, match=r"torn\.safetensors is not a readable"):
        load_weights(tmp_path / "torn.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_weights(tmp_path / "nothing")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "empty_run")


def test_missing_state_is_named(tmp_path):
    path = save_checkpoint(
        tmp_path, "best", small_model(), config_yaml=to_yaml(run_config()), class_names=CLASSES,
        update=3,
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"best\.state\.pt"):
        load_training_state(path)


def test_an_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = small_model()
    path = save(tmp_path, model, update=5)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("sifa.engine.checkpoint.save_file", fail)
    with torch.no_grad():
        next(model.parameters()).add_(1)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, model, update=6)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last.safetensors", "last.state.pt"]
