"""Checkpoints: safetensors weights + weights_only state, atomic, pickle-free, consistent."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

import sifa
from sifa import files
from sifa.engine.checkpoint import (
    FORMAT,
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
    assert sorted(os.listdir(path.parent)) == ["last.safetensors", "last.state-00000005.pt"]


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
    with open(tmp_path / "last.state-00000005.pt", "wb") as handle:
        torch.save(state, handle)
    with pytest.raises(CheckpointError, match=r"last\.state-00000005\.pt needs pickled code"):
        load_training_state(path)
    assert not marker.exists()


def test_state_from_another_update_is_refused(tmp_path):
    path = save(tmp_path, small_model(), update=5)
    save_checkpoint(
        tmp_path / "other", "last", small_model(), config_yaml="", class_names=CLASSES, update=9,
        training_state={"epoch": 2},
    )  # fmt: skip
    os.replace(tmp_path / "other" / "last.state-00000009.pt", tmp_path / "last.state-00000005.pt")
    with pytest.raises(CheckpointError, match=r"update 9.*does not belong.*update 5"):
        load_training_state(path)


def test_foreign_and_broken_files_are_named(tmp_path):
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
    with pytest.raises(CheckpointError, match=r"training state not found: .*best\.state\.pt"):
        load_training_state(path)


@pytest.mark.parametrize("part", ["state", "weights"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, part):
    """The new file is written to /dev/full, which fails every write with ENOSPC."""
    model = small_model()
    path = save(tmp_path, model, update=5)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    full_disk = tmp_path / ".full_disk"
    full_disk.symlink_to("/dev/full")
    temporary_path = files.temporary_path

    def on_a_full_disk(target):
        return (
            full_disk if (".state" in target.name) == (part == "state") else temporary_path(target)
        )

    monkeypatch.setattr(files, "temporary_path", on_a_full_disk)
    with torch.no_grad():
        next(model.parameters()).add_(1)
    failing = "last.state-00000006.pt" if part == "state" else "last.safetensors"
    with pytest.raises(CheckpointError) as raised:
        save(tmp_path, model, update=6)
    message = str(raised.value)
    assert f"cannot write {tmp_path / failing}: No space left on device (ENOSPC)" in message
    assert "the previous last checkpoint is kept" in message
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
    assert load_training_state(path)["update"] == 5


def test_weights_and_state_files_get_the_permissions_of_any_new_file(tmp_path):
    save(tmp_path, small_model())
    (tmp_path / "plain").write_text("a file made the usual way")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes["last.safetensors"] == modes["last.state-00000005.pt"] == modes["plain"]


def test_leftovers_of_killed_saves_go_with_the_next_save(tmp_path):
    save(tmp_path, small_model(), update=5)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid belongs to no process now
    running = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        leftovers = [
            f".last.{gone.pid}.tmp.safetensors",
            f".last.state-00000007.{gone.pid}.tmp.pt",
            f".last.{os.getpid()}.tmp.safetensors",  # this process is not writing now
            "last.state-00000006.pt",  # written by a save killed before its commit
        ]
        kept = [
            f".last.{running.pid}.tmp.safetensors",  # a write still in progress
            f".best.{gone.pid}.tmp.safetensors",  # another checkpoint's, left for its own save
            "notes.txt",
        ]
        for name in leftovers + kept:
            (tmp_path / name).write_bytes(b"x")
        save(tmp_path, small_model(), update=8)
        expected = ["last.safetensors", "last.state-00000008.pt", *kept]
        assert sorted(os.listdir(tmp_path)) == sorted(expected)
    finally:
        running.communicate(b"\n")


def test_a_checkpoint_of_the_earlier_layout_resumes_and_is_replaced(tmp_path):
    """Before state files carried their update: ``last.state.pt`` beside the weights."""
    model = small_model()
    metadata = {"format": FORMAT, "config": to_yaml(run_config()),
                "class_names": json.dumps(CLASSES), "update": "5"}  # fmt: skip
    save_file(model.state_dict(), str(tmp_path / "last.safetensors"), metadata=metadata)
    torch.save({"epoch": 1, "update": 5}, tmp_path / "last.state.pt")
    assert load_training_state(tmp_path / "last")["epoch"] == 1
    save(tmp_path, model, update=6)
    assert sorted(os.listdir(tmp_path)) == ["last.safetensors", "last.state-00000006.pt"]


def test_a_state_file_outside_the_folder_is_refused(tmp_path):
    metadata = {"format": FORMAT, "config": "", "class_names": "[]", "update": "5",
                "state_file": "../elsewhere.pt"}  # fmt: skip
    save_file({"w": torch.zeros(1)}, str(tmp_path / "last.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"names a state file outside its folder"):
        load_training_state(tmp_path / "last")


def test_the_stored_config_is_read_as_plain_data(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    evil = f"model: !!python/object/apply:os.system ['touch {marker}']\n"
    save_checkpoint(tmp_path, "evil", small_model(), config_yaml=evil, class_names=CLASSES,
                    update=1)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"evil\.safetensors: not valid YAML: .*python"):
        load_model(tmp_path / "evil")
    assert not marker.exists()

    # A config written unresolved (by hand, or by an earlier version) keeps ${...} as text.
    monkeypatch.setenv("SIFA_TEST_SECRET", "leaked")
    config = run_config()
    config.output_dir = "${oc.env:SIFA_TEST_SECRET}/runs"
    save_checkpoint(tmp_path, "text", small_model(), config_yaml=OmegaConf.to_yaml(config),
                    class_names=CLASSES, update=1)  # fmt: skip
    _, loaded, _ = load_model(tmp_path / "text")
    assert loaded.output_dir == "${oc.env:SIFA_TEST_SECRET}/runs"


def test_a_missing_run_folder_is_named_as_such(tmp_path):
    with pytest.raises(CheckpointError) as raised:
        resolve_checkpoint(tmp_path / "no_such_run")
    assert str(raised.value) == (
        f"checkpoint not found: {tmp_path / 'no_such_run'} is neither a run folder nor a "
        "checkpoint (there is no no_such_run.safetensors beside it either)"
    )
