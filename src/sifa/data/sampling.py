"""Which frames of a video make a clip.

Samplers map a video's frame count to an integer array ``(num_clips, frames_per_clip)`` of frame
indices. Randomness (training) comes from torch's RNG, so the dataset's per-sample seeding makes
it reproducible.

- :class:`DenseSampler`: ``clip_len`` frames ``frame_interval`` apart (SIFA-Net's recipe: 16 or 32
  consecutive frames). Training: one clip from a uniformly random start. Testing: ``num_clips``
  clips whose starts are the centres of ``num_clips`` equal parts of the valid start range.
- :class:`SegmentSampler`: TSN-style, the video cut into ``num_segments`` equal segments and one
  frame taken from each (a random one in training, the middle one in testing; several test
  clips take evenly spaced positions inside the segments).

Videos shorter than a clip: ``short_video="loop"`` (default) wraps around to the first frame
(indices modulo the frame count); ``"pad"`` repeats the last frame.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

SHORT_VIDEO_CHOICES = ("loop", "pad")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_short(short_video: str) -> None:
    if short_video not in SHORT_VIDEO_CHOICES:
        raise ValueError(f"short_video must be one of {SHORT_VIDEO_CHOICES}, got {short_video!r}")


def _fit(indices: np.ndarray, num_frames: int, short_video: str) -> np.ndarray:
    """Bring indices past the end back into the video, by looping or by repeating the last."""
    if short_video == "loop":
        return indices % num_frames
    return np.minimum(indices, num_frames - 1)


def _uniform(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer uniform in ``[low, high]`` from torch's RNG."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


class DenseSampler:
    """``clip_len`` frames, ``frame_interval`` apart (see the module docstring)."""

    def __init__(
        self,
        clip_len: int = 16,
        frame_interval: int = 1,
        *,
        num_clips: int = 1,
        random_start: bool = False,
        short_video: str = "loop",
    ) -> None:
        _check_positive("clip_len", clip_len)
        _check_positive("frame_interval", frame_interval)
        _check_positive("num_clips", num_clips)
        _check_short(short_video)
        self.clip_len = clip_len
        self.frame_interval = frame_interval
        self.num_clips = num_clips
        self.random_start = random_start
        self.short_video = short_video

    @property
    def span(self) -> int:
        """Frames from the first to the last index of one clip, both included."""
        return (self.clip_len - 1) * self.frame_interval + 1

    def starts(self, num_frames: int, generator: torch.Generator | None = None) -> np.ndarray:
        """First frame of every clip."""
        room = max(num_frames - self.span, 0)  # last valid start
        if self.random_start:
            return np.array([_uniform(0, room, generator) for _ in range(self.num_clips)])
        # Centres of num_clips equal parts of the room + 1 possible starts.
        return ((np.arange(self.num_clips) + 0.5) * (room + 1) / self.num_clips).astype(np.int64)

    def __call__(self, num_frames: int, generator: torch.Generator | None = None) -> np.ndarray:
        _check_positive("num_frames", num_frames)
        offsets = np.arange(self.clip_len) * self.frame_interval
        indices = self.starts(num_frames, generator)[:, None] + offsets[None, :]
        return _fit(indices, num_frames, self.short_video).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"DenseSampler(clip_len={self.clip_len}, frame_interval={self.frame_interval}, "
            f"num_clips={self.num_clips}, random_start={self.random_start}, "
            f"short_video={self.short_video!r})"
        )


class SegmentSampler:
    """One frame from each of ``num_segments`` equal segments (TSN).

    Training (``random_offset=True``): a uniformly random frame in every segment. Testing:
    ``num_clips`` clips, clip ``k`` taking the frame at fraction ``(k + 0.5) / num_clips`` of
    every segment (one clip: the middle frame of every segment).
    """

    def __init__(
        self, num_segments: int = 8, *, num_clips: int = 1, random_offset: bool = False
    ) -> None:
        _check_positive("num_segments", num_segments)
        _check_positive("num_clips", num_clips)
        if random_offset and num_clips != 1:
            raise ValueError(f"random_offset takes one clip, got num_clips={num_clips}")
        self.num_segments = num_segments
        self.random_offset = random_offset
        self.num_clips = num_clips

    def __call__(self, num_frames: int, generator: torch.Generator | None = None) -> np.ndarray:
        _check_positive("num_frames", num_frames)
        length = num_frames / self.num_segments
        if self.random_offset:
            within = torch.rand(self.num_segments, generator=generator, dtype=torch.float64)
            within = within.numpy()[None, :]
        else:
            within = np.repeat(
                ((np.arange(self.num_clips) + 0.5) / self.num_clips)[:, None],
                self.num_segments,
                axis=1,
            )
        # Fewer frames than segments repeats frames in order, which is the loop/pad agreement.
        indices = np.floor((np.arange(self.num_segments)[None, :] + within) * length)
        return np.minimum(indices.astype(np.int64), num_frames - 1)

    def __repr__(self) -> str:
        return (
            f"SegmentSampler(num_segments={self.num_segments}, num_clips={self.num_clips}, "
            f"random_offset={self.random_offset})"
        )
