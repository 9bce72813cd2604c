"""Session set-up shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton backend's tests run its kernels in Triton's interpreter on CPU
# tensors; the variable must be set before the kernels are first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (`-n auto`: one worker per core) each worker computes on one thread, so that
# the workers do not fight over the cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def cpu_kernel_built():
    """Build (or load) the fused CPU kernel once, first: later tests start subprocesses, and
    one killed while it builds would leave the extension's build lock behind."""
    from sifa.ops import cpu

    cpu.load()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """12 training and 8 validation mp4 videos of 4 classes, 8 frames of 32 x 32."""
    from sifa.data.synthetic import make_synthetic_dataset

    from training_fixtures import TINY_DATA

    folder = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(folder, TINY_DATA, progress=False)
    return folder


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """A run folder with a checkpoint after 3 updates on the tiny data (eval, predict, export
    and visualize tests)."""
    from sifa.engine.trainer import train

    from training_fixtures import tiny_config

    run = tmp_path_factory.mktemp("trained")
    train(tiny_config(tiny_data, run, optim__epochs=1, eval_every=0, optim__lr=0.01))
    return run


@pytest.fixture
def drawn_figures(monkeypatch):
    """The matplotlib figures that ``sifa.engine.metrics.save_png`` saves, in order (the plot
    functions and ``sifa visualize`` draw through it)."""
    from sifa.engine import metrics

    figures = []
    save = metrics.save_png

    def recording_save(figure, path):
        figures.append(figure)
        return save(figure, path)

    monkeypatch.setattr(metrics, "save_png", recording_save)
    return figures
