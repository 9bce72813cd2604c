"""H.264 video files written frame by frame with PyAV (libx264, ``yuv420p``, CRF 18).

The same frames give the same bytes every time: x264's output varies from run to run with
frame threads, and on small frames with macroblock-tree rate control or B-frames (measured: 1
clip in 32, 30% of the encodes of that clip), so it runs on one thread with neither of the two;
and it is fed packed copies of the frames, because swscale's own buffers have padded rows
(uninitialised bytes) that x264 reads.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np


class H264Writer:
    """Write uint8 RGB ``(H, W, 3)`` frames (even ``H`` and ``W``) to ``path`` at a constant
    ``rate`` (frames per second; a :class:`~fractions.Fraction` such as 30000/1001 is kept
    exact). ``format`` is the container (default: from the file name); ``options`` are
    libx264's options over the defaults (``crf`` 18, no macroblock tree nor B-frames). Use as a
    context manager, or call :meth:`close`, which flushes the encoder and finishes the file."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        rate: int | Fraction,
        height: int,
        width: int,
        format: str | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        if height % 2 or width % 2:
            raise ValueError(f"yuv420p needs an even height and width, got {height}x{width}")
        self.size = (height, width)
        self._av = av
        self._to_yuv = VideoReformatter()  # one for the file: a new one per frame costs more
        self._container = av.open(str(path), "w", format=format)
        try:
            stream = self._container.add_stream("libx264", rate=rate)
            stream.height, stream.width = height, width
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1  # see the module docstring
            stream.codec_context.time_base = Fraction(1) / rate
            stream.options = {"crf": "18", "x264-params": "mbtree=0:bframes=0", **(options or {})}
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Encode one uint8 RGB ``(H, W, 3)`` frame of the writer's size."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != (*self.size, 3):
            raise ValueError(
                f"frames must be uint8 {(*self.size, 3)}, got {frame.dtype} {frame.shape}"
            )
        rgb = self._av.VideoFrame.from_ndarray(frame, format="rgb24")
        self.write_yuv(self._to_yuv.reformat(rgb, format="yuv420p"))

    def write_yuv(self, frame) -> None:
        """Encode one ``yuv420p`` :class:`av.VideoFrame` of the writer's size (a packed copy of
        it: see the module docstring)."""
        packed = self._av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        packed.pts, packed.time_base = self.frames, self._stream.codec_context.time_base
        self._container.mux(self._stream.encode(packed))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode())
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        elif self._container is not None:  # a failed write: no flush that could fail again
            self._container.close()
            self._container = None
