"""Fixtures of the engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sifa.data.synthetic import make_synthetic_dataset

from training_fixtures import TINY_DATA


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """12 training and 8 validation mp4 videos of 4 classes, 8 frames of 32 x 32."""
    folder = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(folder, TINY_DATA, progress=False)
    return folder


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """A run folder with a checkpoint after 3 updates on the tiny data (eval and predict tests)."""
    from sifa.engine.trainer import train

    from training_fixtures import tiny_config

    run = tmp_path_factory.mktemp("trained")
    train(tiny_config(tiny_data, run, optim__epochs=1, eval_every=0, optim__lr=0.01))
    return run
