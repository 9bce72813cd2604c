"""Helpers of the model folder tests: a small run folder made in a second, and a Hugging Face
Hub cache laid out as huggingface_hub lays it out, for loading ``hf-hub:`` ids offline."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import torch

import sifa
from sifa.engine.checkpoint import save_checkpoint
from sifa.engine.config import to_yaml

from model_fixtures import perturbed
from training_fixtures import tiny_config

# The classes of the tiny synthetic dataset (tests/training_fixtures.TINY_DATA), in its order.
CLASSES = ["right_then_up", "up_then_right", "left_then_down", "down_then_left"]


def make_run(folder: Path, data_dir: Path | None = None, *, name: str = "best", update: int = 3):
    """A run folder ``folder`` whose ``checkpoints/NAME.safetensors`` holds a width-8
    ``sifa_resnet18`` with every weight moved off its initial value (so that each one shapes
    the output), saved with the tiny config (data in ``data_dir``); no training."""
    config = tiny_config(data_dir or folder / "data", folder)
    torch.manual_seed(0)
    model = sifa.create_model(
        config.model.name, num_classes=len(CLASSES), **dict(config.model.switches)
    )
    save_checkpoint(
        folder / "checkpoints", name, perturbed(model), config_yaml=to_yaml(config),
        class_names=CLASSES, update=update,
    )  # fmt: skip
    return folder


class FrameReader:
    """A stand-in for an open video: ``read(indices)`` gives fixed random uint8 frames
    ``(N, 40, 48, 3)``, frame ``i`` the same on every call."""

    def __init__(self, count: int = 24, seed: int = 0):
        generator = np.random.default_rng(seed)
        self.frames = generator.integers(0, 256, (count, 40, 48, 3), dtype=np.uint8)

    def read(self, indices) -> torch.Tensor:
        return torch.from_numpy(self.frames[np.asarray(indices)])


def random_clips(batch: int = 2, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, frames, size, size, generator=generator)


def lay_out_hub_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """Put the files of ``folder`` into the Hub cache ``cache`` as huggingface_hub stores a
    download of ``repo_id`` at ``revision``: ``models--ORG--NAME/blobs/<sha256>``,
    ``snapshots/<commit>/FILE`` linking to its blob, ``refs/<revision>`` naming the commit.
    Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
