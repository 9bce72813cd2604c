"""Video decoding behind one interface: PyAV (default), decord (optional) and frame folders.

Every reader returns RGB frames as a uint8 tensor ``(T, H, W, 3)`` for the frame indices asked
for (in that order, repeats allowed) and knows the video's :class:`VideoInfo` without decoding
the whole file where the container allows. Problems with a file raise a :class:`VideoError`
subclass whose message starts with the file's path.

Frame ``i`` is the ``i``-th frame the video holds, in presentation order, whatever its
timestamps: a variable-frame-rate video (a phone's, a screen recording, an AVI that skips
frames) is read by the frames that exist, as decord does, not by ``duration x rate``. PyAV
finds them in one of two ways (:func:`frame_timing`): where the container's index lists every
frame at evenly spaced times (constant frame rate, as in the usual mp4), ``i = round(time *
fps)`` and opening costs nothing more; otherwise the stream's packets are read once (no
decoding) for the timestamps of every frame. A reader seeks to the keyframe before the first
frame it needs and stops decoding after the last.

FFmpeg's decoding threads do not survive ``fork``: a threaded decoder that a forked DataLoader
worker inherits as garbage and then frees hangs that worker. So PyAV readers free their decoder
as soon as they are closed or fail (no exception keeps it alive), and importing this module
registers a garbage collection before every ``fork`` so that no unreachable decoder crosses one.
"""

from __future__ import annotations

import gc
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

# No unreachable (threaded) decoder may cross a fork: see the module docstring.
os.register_at_fork(before=gc.collect)


class VideoError(Exception):
    """A video or frame folder that cannot be read; ``path`` names it."""

    def __init__(self, path: str | os.PathLike, problem: str | None = None) -> None:
        if problem is None:
            # Re-raised by a DataLoader from a worker process, which passes its report (the
            # worker's traceback) as the only argument: its last line is the original error.
            path, problem = _error_of_worker_report(str(path))
        self.path = str(path)
        self.problem = problem
        # "pipe: reading failed", not "pipe:: reading failed"
        super().__init__(f"{self.path}{' ' if self.path.endswith(':') else ': '}{problem}")


def _error_of_worker_report(report: str) -> tuple[str, str]:
    """``(path, problem)`` from the last line of a worker's traceback,
    ``module.ClassName: PATH: PROBLEM``."""
    lines = [line for line in report.splitlines() if line.strip()]
    _, _, message = (lines[-1] if lines else "").partition(": ")
    path, separator, problem = message.partition(": ")
    if not separator:
        return report.strip(), "cannot be read"
    return path, problem


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The file or folder does not exist."""


class EmptyVideoError(VideoError):
    """The file is empty or holds no frames."""


class VideoDecodeError(VideoError):
    """The file is not a decodable video, or is truncated or corrupt."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    # Frames per second: the stated rate, or for a variable frame rate the average over the
    # frames the video holds; None where unknown (frame folders without a stated rate).
    fps: float | None
    height: int
    width: int


class VideoReader(ABC):
    """Random access to the frames of one video. Use as a context manager or call ``close``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    @abstractmethod
    def info(self) -> VideoInfo: ...

    @abstractmethod
    def _read(self, indices: list[int]) -> dict[int, np.ndarray]:
        """Frames ``(H, W, 3)`` uint8 for the given sorted, unique indices."""

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``(T, H, W, 3)``."""
        if self.closed:
            raise ValueError(f"{self.path}: the reader is closed")
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError(f"{self.path}: no frame indices to read")
        count = self.info.num_frames
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise IndexError(f"{self.path}: frame {bad[0]} out of range for {count} frames")
        frames = self._read(sorted(set(indices)))
        return torch.from_numpy(np.stack([frames[i] for i in indices]))

    def frame_time(self, index: int) -> float | None:
        """Seconds from the first frame to frame ``index``; ``index = num_frames`` is where the
        video ends (one average frame after the last). ``index / fps`` unless the video says
        otherwise (a variable frame rate); None without a frame rate."""
        fps = self.info.fps
        return index / fps if fps else None

    closed = False

    def close(self) -> None:
        self.closed = True

    def _fail(self, problem: str) -> NoReturn:
        """Free the decoder, then raise; called outside ``except`` blocks, so that no traceback
        keeps a decoder (and its threads) alive."""
        self.close()
        raise VideoDecodeError(self.path, problem)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's explanation without the file name PyAV appends to it."""
    return getattr(error, "strerror", None) or str(error)


def count_frames(folder: str | os.PathLike, template: str, start_index: int = 1) -> int:
    """How many frames ``template.format(start_index)``, ``template.format(start_index + 1)``
    ... ``folder`` holds in a row (one listing of the folder)."""
    names = set(os.listdir(folder))
    count = 0
    while template.format(start_index + count) in names:
        count += 1
    return count


def check_video_file(path: Path) -> None:
    """Raise :class:`VideoNotFoundError` for a path that does not exist,
    :class:`VideoDecodeError` for one that is not a regular file (a folder, a pipe, a device)
    and :class:`EmptyVideoError` for an empty file."""
    if not path.exists():
        raise VideoNotFoundError(path, "no such file")
    if path.is_dir():
        raise VideoDecodeError(path, "is a folder, not a video file")
    if not path.is_file():
        raise VideoDecodeError(
            path,
            "is not a regular file (a pipe, socket or device; sifa predict --stream reads those)",
        )
    if path.stat().st_size == 0:
        raise EmptyVideoError(path, "the file is empty")


def _is_image_format(container) -> bool:
    """Whether FFmpeg opened the source as a still image (its image demuxers: ``image2`` and
    the ``*_pipe`` ones, such as ``png_pipe``), whatever the file's name says."""
    name = container.format.name
    return name == "image2" or name.endswith("_pipe")


def open_video_stream(source, *, unreadable: str = "not a readable video",
                      images: bool = False, **options):  # fmt: skip
    """Open ``source`` (a path, URL or ``pipe:``; ``options`` go to ``av.open``) and return
    ``(container, its first video stream)``. Raises :class:`VideoDecodeError` naming
    ``source``: ``unreadable`` with FFmpeg's reason, "has no video stream", or, unless
    ``images`` (a stream of pictures such as ``image2pipe``), that it is a still image."""
    import av

    try:
        container = av.open(str(source), **options)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoDecodeError(source, f"{unreadable} ({ffmpeg_reason(error)})") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(source, "has no video stream")
    if not images and _is_image_format(container):
        codec = container.streams.video[0].codec_context.name
        container.close()
        raise VideoDecodeError(source, f"is a still image ({codec}), not a video")
    return container, container.streams.video[0]


@dataclass(frozen=True)
class FrameTiming:
    """Where the frames of a video stream are (see :func:`frame_timing`)."""

    num_frames: int
    fps: float | None
    # The presentation timestamps of every frame in order, where the timing is irregular;
    # None where frame i is at ``start + i / fps``.
    timestamps: tuple[int, ...] | None


def _evenly_spaced(stream, fps: float) -> bool:
    """Whether the container's index lists every frame the stream states, at steps of one
    frame (to a tick: 29.97 fps in milliseconds alternates 33 and 34)."""
    entries = stream.index_entries
    if len(entries) != stream.frames:
        return False
    step = 1 / (fps * float(stream.time_base))
    times = [entry.timestamp for entry in entries]
    return all(abs(later - earlier - step) <= 1 for earlier, later in pairwise(times))


def frame_timing(container, stream, path: str | os.PathLike) -> FrameTiming:
    """How many frames ``stream`` (of an open PyAV ``container``) holds, and where. Regular
    timing, from the index alone, where it lists the stated number of frames evenly spaced;
    otherwise the timestamps of the stream's packets, read once without decoding (a variable
    frame rate, frames skipped, or no complete index: WebM, MKV, MPEG-TS). Leaves the
    container anywhere: seek before decoding. Raises :class:`VideoDecodeError` naming
    ``path`` where the packets cannot be read."""
    import av

    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    if fps and stream.frames and _evenly_spaced(stream, fps):
        return FrameTiming(stream.frames, fps, None)
    try:
        stamps = {
            packet.pts if packet.pts is not None else packet.dts
            for packet in container.demux(stream)
            if packet.size
        }
    except av.error.FFmpegError as error:
        raise VideoDecodeError(path, f"cannot read packets ({ffmpeg_reason(error)})") from None
    stamps.discard(None)
    timestamps = tuple(sorted(stamps))
    span = (timestamps[-1] - timestamps[0]) * float(stream.time_base) if timestamps else 0.0
    return FrameTiming(len(timestamps), average_rate(len(timestamps), span, fps), timestamps)


def average_rate(count: int, span: float, stated: float | None) -> float | None:
    """Frames per second of ``count`` frames whose first and last are ``span`` seconds apart:
    the ``stated`` rate where they keep to it (to half a frame), else their average."""
    if span <= 0 or (stated and abs(span * stated - (count - 1)) <= 0.5):
        return stated
    return (count - 1) / span


class PyAVReader(VideoReader):
    """FFmpeg through PyAV, with threaded decoding (``threads=0``: FFmpeg picks)."""

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0) -> None:
        super().__init__(path)
        import av
        from av.video.reformatter import VideoReformatter

        self._av = av
        check_video_file(self.path)
        self._container, self._stream = open_video_stream(self.path)
        self._stream.thread_type = "AUTO"
        self._stream.thread_count = threads
        # One converter for all frames: a frame's own to_ndarray sets up a new one every time,
        # which costs more than decoding a small frame.
        self._to_rgb = VideoReformatter()
        self._info: VideoInfo | None = None
        self._timing: FrameTiming | None = None
        self._index_of_timestamp: dict[int, int] = {}

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            try:
                timing, failure = frame_timing(self._container, self._stream, self.path), None
            except VideoDecodeError as error:
                failure = error.problem
            if failure is not None:  # outside the except block: see _fail
                self._fail(failure)
            if not timing.num_frames:
                self.close()
                raise EmptyVideoError(self.path, "the video stream holds no frames")
            self._timing = timing
            if timing.timestamps is not None:
                self._index_of_timestamp = {t: i for i, t in enumerate(timing.timestamps)}
            context = self._stream.codec_context
            self._info = VideoInfo(timing.num_frames, timing.fps, context.height, context.width)
        return self._info

    def frame_time(self, index: int) -> float | None:
        info = self.info  # finds the timing
        stamps = self._timing.timestamps
        if stamps is None:
            return super().frame_time(index)
        last = len(stamps) - 1
        seconds = (stamps[min(index, last)] - stamps[0]) * float(self._stream.time_base)
        if index <= last:
            return seconds
        return seconds + (index - last) / info.fps if info.fps else None

    def _index(self, frame) -> int:
        """The index of a decoded frame; -1 for one that is not among the video's frames."""
        stamp = frame.pts if frame.pts is not None else frame.dts
        if stamp is None:
            return -1
        if self._timing.timestamps is not None:
            return self._index_of_timestamp.get(stamp, -1)
        start = self._stream.start_time or 0
        return round(float((stamp - start) * self._stream.time_base) * self.info.fps)

    def _timestamp(self, index: int) -> int:
        stream = self._stream
        if self._timing.timestamps is not None:
            return self._timing.timestamps[index]
        start = stream.start_time or 0
        return start + int(Fraction(index) / Fraction(self.info.fps) / stream.time_base)

    def _decode_from(self, seek_index: int, wanted: list[int]) -> tuple[dict[int, np.ndarray], int]:
        """Frames of ``wanted`` found after seeking near ``seek_index``, and the last index
        decoded."""
        stream = self._stream
        target = self._timestamp(seek_index)
        self._container.seek(target, stream=stream, backward=True, any_frame=False)
        remaining = set(wanted)
        frames, index = {}, -1
        for frame in self._container.decode(stream):
            index = self._index(frame)
            if index < 0:
                continue
            if index in remaining:
                frames[index] = self._to_rgb.reformat(frame, format="rgb24").to_ndarray()
                remaining.discard(index)
            if index >= wanted[-1] or not remaining:
                break
        return frames, index

    def _read(self, indices: list[int]) -> dict[int, np.ndarray]:
        try:
            frames, last = self._decode_from(indices[0], indices)
            if indices[0] not in frames and indices[0] > 0:
                frames, last = self._decode_from(0, indices)  # the seek landed too late
        except self._av.error.FFmpegError as error:
            failure = ffmpeg_reason(error)
        else:
            missing = [i for i in indices if i not in frames]
            if not missing:
                return frames
            failure = f"frame {missing[0]} of {self.info.num_frames} could not be decoded"
            if last < missing[0]:
                failure += f"; decoding stopped after frame {last}"
            else:
                failure += f" (the decoder skipped it; it went on to frame {last})"
        self._fail(
            f"decoding frames {indices[0]} to {indices[-1]} failed ({failure}; "
            "truncated or corrupt file?)"
        )

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._stream = None
        super().close()


class DecordReader(VideoReader):
    """The optional ``decord`` decoder (``pip install decord``)."""

    backend = "decord"

    def __init__(self, path: str | os.PathLike, *, threads: int = 0) -> None:
        super().__init__(path)
        try:
            import decord
        except ImportError as error:
            raise ImportError(
                "the decord backend needs the decord package: pip install decord"
            ) from error
        self._error = decord.DECORDError
        check_video_file(self.path)
        self._reader = None
        try:
            self._reader = decord.VideoReader(str(self.path), num_threads=threads)
            count = len(self._reader)
            height, width = self._reader[0].shape[:2] if count else (0, 0)
            span = self._seconds(count - 1) if count else 0.0
            fps = average_rate(count, span, float(self._reader.get_avg_fps()) or None)
        except (self._error, RuntimeError) as error:
            failure = str(error)
        else:
            failure = None
        if failure is not None:
            self._fail(f"not a readable video ({failure})")
        if count == 0:
            self.close()
            raise EmptyVideoError(self.path, "the video stream holds no frames")
        self._info = VideoInfo(count, fps, height, width)

    @property
    def info(self) -> VideoInfo:
        return self._info

    def _seconds(self, index: int) -> float:
        """Seconds from the first frame to frame ``index`` by the video's timestamps."""
        starts = self._reader.get_frame_timestamp([0, index])[:, 0]
        return float(starts[1] - starts[0])

    def frame_time(self, index: int) -> float | None:
        last = self._info.num_frames - 1
        if index <= last:
            return self._seconds(index)
        fps = self._info.fps
        return self._seconds(last) + (index - last) / fps if fps else None

    def _read(self, indices: list[int]) -> dict[int, np.ndarray]:
        try:
            batch = self._reader.get_batch(indices).asnumpy()
        except (self._error, RuntimeError) as error:
            failure = str(error)
        else:
            return dict(zip(indices, batch, strict=True))
        self._fail(f"decoding failed ({failure})")

    def close(self) -> None:
        self._reader = None
        super().close()


class FrameFolderReader(VideoReader):
    """A folder of image files, one per frame, named by ``template`` from ``start_index``
    (``img_00001.jpg``, ... by default, as in mmaction's frame lists)."""

    backend = "frames"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_frames: int | None = None,
        template: str = "img_{:05d}.jpg",
        start_index: int = 1,
        fps: float | None = None,
    ) -> None:
        super().__init__(path)
        if not self.path.is_dir():
            raise VideoNotFoundError(self.path, "no such frame folder")
        self.template = template
        self.start_index = start_index
        if num_frames is None:
            num_frames = count_frames(self.path, self.template, self.start_index)
        if num_frames == 0:
            raise EmptyVideoError(self.path, f"holds no frames named like {template!r}")
        self._num_frames = num_frames
        self._fps = fps
        self._info: VideoInfo | None = None

    def _frame_path(self, index: int) -> Path:
        return self.path / self.template.format(self.start_index + index)

    def _load(self, index: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self._frame_path(index)
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except FileNotFoundError as error:
            raise VideoDecodeError(self.path, f"frame file {path.name} is missing") from error
        except (UnidentifiedImageError, OSError) as error:
            raise VideoDecodeError(self.path, f"frame file {path.name} is unreadable") from error

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            height, width = self._load(0).shape[:2]
            self._info = VideoInfo(self._num_frames, self._fps, height, width)
        return self._info

    def _read(self, indices: list[int]) -> dict[int, np.ndarray]:
        frames = {i: self._load(i) for i in indices}
        size = self.info.height, self.info.width
        for index, frame in frames.items():
            if frame.shape[:2] != size:
                raise VideoDecodeError(
                    self.path,
                    f"frame file {self._frame_path(index).name} is {frame.shape[:2]}, "
                    f"not {size} like the first frame",
                )
        return frames


BACKENDS: dict[str, type[VideoReader]] = {
    "pyav": PyAVReader,
    "decord": DecordReader,
    "frames": FrameFolderReader,
}


def open_video(path: str | os.PathLike, backend: str = "pyav", **options) -> VideoReader:
    """A reader for ``path`` with the named backend (``pyav``, ``decord`` or ``frames``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend](path, **options)


def backend_available(backend: str) -> tuple[bool, str]:
    """Whether a backend can run here, and why not."""
    module = {"pyav": "av", "decord": "decord", "frames": "PIL"}.get(backend)
    if module is None:
        return False, f"unknown backend {backend!r}"
    try:
        __import__(module)
    except ImportError as error:
        return False, f"{module} is not installed ({error})"
    return True, ""
