"""Helpers of the engine tests: a tiny synthetic dataset and a config that trains on it."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from omegaconf import OmegaConf

from sifa.data.synthetic import SyntheticConfig
from sifa.engine.config import TrainConfig, validate
from sifa.engine.demo import synthetic_splits

TINY_DATA = SyntheticConfig(videos_per_class=3, val_videos_per_class=2, size=32, frames=8,
                            num_pairs=2)  # fmt: skip


def tiny_config(data_dir: Path, output_dir: Path, **overrides):
    """A config that trains ``sifa_resnet18`` at width 8 on ``tiny_data`` in seconds.

    ``overrides`` are dotted keys with ``__`` for dots (``optim__lr=0.1``)."""
    config = OmegaConf.merge(
        OmegaConf.structured(TrainConfig),
        {
            "model": {"name": "sifa_resnet18", "switches": {"base_width": 8, "dropout": 0.0}},
            "data": {
                **synthetic_splits(data_dir),
                "clip_len": 8,
                "train_size": 32,
                "scale": [0.5, 1.0],
                "color_jitter": None,
                "blur_p": 0.0,
                "test_short_side": 32,
                "test_crop_size": 32,
                "test_clips": 2,
                "test_crops": 1,
                "batch_size": 4,
                "val_batch_size": 3,
                "num_workers": 0,
            },
            "optim": {"name": "adamw", "lr": 0.002, "weight_decay": 0.05, "epochs": 2,
                      "warmup_epochs": 0.5, "clip_grad_norm": 5.0},
            "output_dir": str(output_dir),
            "progress": False,
            "tensorboard": False,
            "log_every": 1,
        },
    )  # fmt: skip
    for key, value in overrides.items():
        OmegaConf.update(config, key.replace("__", "."), value, merge=False)
    validate(config, "tiny_config")
    return config


def write_config(config, path: Path) -> Path:
    path.write_text(OmegaConf.to_yaml(config))
    return path


# What the forkserver below imports once, before it forks: torch, sifa and what the processes
# it starts would import first (an optimiser's first step imports torch._dynamo).
FORKSERVER_PRELOAD = [
    "torch._dynamo", "sifa.cli", "sifa.engine.trainer", "sifa.engine.demo",
    "sifa.benchmarks.models", "sifa.benchmarks.ops",
]  # fmt: skip


def forkserver():
    """multiprocessing's ``forkserver`` context, its server importing ``FORKSERVER_PRELOAD``:
    each process it starts is a fresh one, forked from a server that has only imported modules,
    without the seconds a spawned process spends importing torch and sifa."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    return context


def run_sifa(argv: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> None:
    """``sifa ARGV`` as ``python -m sifa`` runs it, in a process that ``forkserver()`` started,
    with ``env`` added to its environment and its output written to ``stdout`` and ``stderr``
    (the process's exit code is the command's)."""
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        with open(path, "wb", buffering=0) as file:
            os.dup2(file.fileno(), fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the process's own)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    from sifa.cli import main

    sys.exit(main(argv))


def fork_instead_of_spawn(monkeypatch, module) -> None:
    """Make ``module`` (a benchmark that measures in fresh processes through
    ``multiprocessing.get_context("spawn")``) start them from ``forkserver()`` instead: each
    still a process of its own that has done nothing but import, without the import time. A
    module that stops asking for "spawn" fails here, loudly."""

    def get_context(method):
        assert method == "spawn"
        return forkserver()

    monkeypatch.setattr(module, "multiprocessing", SimpleNamespace(get_context=get_context))
