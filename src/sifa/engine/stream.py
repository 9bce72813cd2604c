"""``sifa predict --stream``: predictions on a source as its frames arrive.

A source is anything FFmpeg opens: a file (also one still being written), a FIFO, ``pipe:``
(standard input), a URL (``rtsp://``, ``http://``, ``udp://``...) or a device with its input
format (``/dev/video0`` with ``input_format="v4l2"``); ``input_options`` are FFmpeg's options
for opening it (``{"rtsp_transport": "tcp"}``, ``{"video_size": "640x480"}``; FFmpeg analyses up
to 5 s of a source before the first frame comes out: ``{"analyzeduration": "500000"}``, in
microseconds, shortens that). Frames are decoded as they arrive, in a
thread of their own, into a rolling buffer that holds the last window of frames:

- dense sampling (``data.sampling: dense``): the window is the last ``data.clip_len x
  data.frame_interval`` frames, and the clip is sampled from it as in testing (one clip);
- segment sampling: the window is the last ``round(window_seconds x fps)`` frames, cut into
  ``data.clip_len`` segments, the middle frame of each taken (``window_seconds`` is required).

Stream time is the frame count over the frame rate: frame ``n`` (from 0, in arrival order) is at
``n / fps`` seconds. The first prediction is made when the first window is full, then one every
``stride_seconds`` (``round(stride_seconds x fps)`` frames): the window of a prediction spans
``[start_s, end_s)``. A stream that ends before the first window is full gets one prediction on
the frames it had (the sampler loops them, as for a short video).

Keeping up: a prediction takes the model's time; meanwhile the decoding thread goes on. With
``skip_late`` (the default for live sources and ``realtime`` reading: any source that is not a
regular file), a prediction is skipped when the frames of the next one have already arrived, so
that the predictions never fall behind the source: latency stays about one model run, and the
summary counts the skipped predictions. Without it (the default for files, read as fast as they
decode), every stride is predicted and the decoder waits for the model. No frame is ever dropped:
every frame goes into the buffer and into the annotated video.

Latency is the wall time from the arrival of the window's last frame (decoded and converted to
RGB; for a file read as fast as it decodes, when the predictor takes it) to the prediction
being ready. The model runs once on blank frames before the stream is read, so that the first
prediction's latency does not include setting up its kernels.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from sifa.data.decoding import VideoDecodeError, ffmpeg_reason, open_video_stream
from sifa.engine.annotate import draw_predictions, even_crop

if TYPE_CHECKING:
    from omegaconf import DictConfig

_END = object()  # the decoding thread's last item


class _Failure:
    """Handed over by the decoding thread when a source fails after giving frames."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


_POLL_S = 0.1  # how often blocked queue operations look at the stop flag


class StreamPredictor(Protocol):
    """What a stream needs of a predictor: :class:`sifa.engine.predict.Predictor` is one."""

    config: DictConfig  # the training config: its ``data`` sampling sets the window

    def probabilities(self, reader, first: int, count: int, clips: int) -> torch.Tensor:
        """Average class probabilities of ``clips`` clips within frames ``[first, first+count)``
        of ``reader`` (anything with ``read(indices) -> uint8 (N, H, W, 3)``)."""

    def top(self, probabilities: torch.Tensor, k: int) -> list[dict]:
        """The ``k`` most probable classes, ``[{"label", "score"}]``."""


class _Frames:
    """The buffered frames as a reader for :meth:`StreamPredictor.probabilities`."""

    def __init__(self, frames) -> None:
        self.frames = frames  # a sequence of uint8 (H, W, 3) arrays

    def read(self, indices) -> torch.Tensor:
        # Only the frames the clip takes are copied, not the whole window.
        return torch.from_numpy(np.stack([self.frames[i] for i in np.asarray(indices)]))


def window_length(window_seconds: float, fps: float) -> int:
    """Frames in a window of ``window_seconds``."""
    return max(1, round(window_seconds * fps))


def is_live(source: str | os.PathLike) -> bool:
    """Whether ``source`` is read as a live source: anything but a regular file."""
    return not Path(source).is_file()


class PredictionStream:
    """Iterate to get one prediction dict per stride (see the module docstring):
    ``{"start_s", "end_s", "top": [{"label", "score"}], "latency_s"}``. :meth:`summary` gives
    the counts and latencies so far, also after an interruption. A source that fails after
    giving frames (a camera unplugged, a read timeout) ends the stream, and the summary's
    ``failure`` says why; one that fails before raises its error. ``out_video`` receives every
    frame with the latest prediction drawn on it (H.264 mp4, written atomically: it appears when
    the stream ends, is closed or is interrupted by ``KeyboardInterrupt``; an error discards it).
    The source is opened here, so an unopenable source raises a
    :class:`~sifa.data.decoding.VideoDecodeError` at once."""

    def __init__(
        self,
        predictor: StreamPredictor,
        source: str | os.PathLike,
        *,
        stride_seconds: float = 1.0,
        window_seconds: float | None = None,
        topk: int = 5,
        input_format: str | None = None,
        input_options: dict[str, str] | None = None,
        realtime: bool = False,
        skip_late: bool | None = None,
        out_video: str | os.PathLike | None = None,
    ) -> None:
        if not stride_seconds or stride_seconds <= 0:
            raise ValueError(f"--stride-seconds must be positive, got {stride_seconds}")
        data = predictor.config.data
        if data.sampling == "segment":
            if not window_seconds or window_seconds <= 0:
                raise ValueError(
                    "a segment-sampling model needs a positive --window-seconds with --stream "
                    "(the window its data.clip_len segments are cut from)"
                )
        elif window_seconds is not None:
            raise ValueError(
                "--window-seconds does not apply to --stream with a dense-sampling model: its "
                f"window is data.clip_len x data.frame_interval = "
                f"{data.clip_len * data.frame_interval} frames"
            )

        self.predictor = predictor
        self.source = str(source)
        self.topk = topk
        self.realtime = realtime
        live = realtime or is_live(source)
        self.skip_late = live if skip_late is None else skip_late
        self._bounded = not live  # a file waits for the model; a live source never does
        self.out_video = Path(out_video) if out_video is not None else None
        self._container, self._stream = open_video_stream(
            self.source, unreadable="cannot be opened", images=input_format is not None,
            format=input_format, options=input_options,
        )  # fmt: skip
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        if not rate:
            self._container.close()
            raise VideoDecodeError(self.source, "has no frame rate, so strides cannot be timed")
        self.rate = rate
        self.fps = float(rate)
        if window_seconds:
            self.window = window_length(window_seconds, self.fps)
        else:
            self.window = data.clip_len * data.frame_interval
        self.stride = max(1, round(stride_seconds * self.fps))
        self._warm_up()
        self.frames = 0
        self.predictions = 0
        self.skipped = 0
        self.latencies: list[float] = []
        self.failure: str | None = None  # why a source that gave frames stopped, if it failed
        self._iterator: Iterator[dict] | None = None

    def _warm_up(self) -> None:
        """One prediction on blank frames, so that the first real one does not pay for
        setting up the model's kernels (seconds on a CPU, which would count as latency)."""
        context = self._stream.codec_context
        if context.height and context.width:
            blank = np.zeros((context.height, context.width, 3), dtype=np.uint8)
            self.predictor.probabilities(_Frames([blank] * self.window), 0, self.window, 1)

    def __iter__(self) -> Iterator[dict]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    def close(self) -> None:
        """Stop reading; finish the annotated video with the frames so far."""
        if self._iterator is not None:
            self._iterator.close()
        if self._container is not None:  # also when the iterator never started
            self._container.close()
            self._container = None

    def summary(self) -> dict:
        """``{"source", "fps", "frames", "predictions", "skipped", "latency_mean_s",
        "latency_p95_s", "failure"}`` (latencies ``None`` without predictions; ``failure``: why
        the source stopped if it failed after giving frames, else ``None``)."""
        latencies = np.array(self.latencies)
        return {
            "source": self.source,
            "fps": self.fps,
            "frames": self.frames,
            "predictions": self.predictions,
            "skipped": self.skipped,
            "latency_mean_s": float(latencies.mean()) if len(latencies) else None,
            "latency_p95_s": float(np.percentile(latencies, 95)) if len(latencies) else None,
            "failure": self.failure,
        }

    # ------------------------------------------------------------------ decoding thread

    def _decode(self, frames: queue.Queue, stop: threading.Event) -> None:
        """Put ``(rgb, arrival_time)`` for every frame, then an error if any, then ``_END``."""
        import av
        from av.video.reformatter import VideoReformatter

        container, to_rgb = self._container, VideoReformatter()
        decoded = 0
        try:
            started = time.perf_counter()
            for index, frame in enumerate(container.decode(self._stream)):
                if self.realtime:  # a file read at its own pace, as if it were live
                    stop.wait(max(0.0, started + index / self.fps - time.perf_counter()))
                if stop.is_set():
                    return
                rgb = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                self._put(frames, (rgb, time.perf_counter()), stop)
                decoded += 1
        except av.error.FFmpegError as error:
            problem = f"reading failed after {decoded} frames ({ffmpeg_reason(error)})"
            if not decoded and "mp4" in container.format.name.split(","):
                problem += (
                    "; an mp4 or mov whose index (moov) comes after its frames cannot be read "
                    "as a stream: send MPEG-TS instead (ffmpeg -i VIDEO -c copy -f mpegts -), "
                    "or give the file's path"
                )
            # A source that fails once it has given frames (a camera gone, a read timeout)
            # has ended: what came until then is kept.
            ending = _Failure(problem) if decoded else VideoDecodeError(self.source, problem)
            self._put(frames, ending, stop)
        except Exception as error:  # handed to the consumer, which raises it
            self._put(frames, error, stop)
        finally:
            container.close()
            self._put(frames, _END, stop)

    @staticmethod
    def _put(frames: queue.Queue, item, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                frames.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------------ predictions

    def _predict(self, buffer: deque, end: int, arrival: float) -> dict:
        predictor = self.predictor
        probabilities = predictor.probabilities(_Frames(buffer), 0, len(buffer), 1)
        top = predictor.top(probabilities, self.topk)
        latency = time.perf_counter() - arrival
        self.predictions += 1
        self.latencies.append(latency)
        return {
            "start_s": round((end - len(buffer)) / self.fps, 3),
            "end_s": round(end / self.fps, 3),
            "top": top,
            "latency_s": round(latency, 6),
        }

    def _run(self) -> Iterator[dict]:
        frames: queue.Queue = queue.Queue(maxsize=2 * self.window if self._bounded else 0)
        stop = threading.Event()
        decoder = threading.Thread(
            target=self._decode, args=(frames, stop), name="sifa-stream-decoder", daemon=True
        )
        decoder.start()
        buffer: deque = deque(maxlen=self.window)
        writer, temporary, keep, latest = None, None, False, None
        try:
            while True:
                try:
                    item = frames.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    self.failure = item.problem
                    continue
                if isinstance(item, BaseException):
                    raise item
                rgb, arrival = item
                if self._bounded:  # a file's frames are all there: one arrives when taken
                    arrival = time.perf_counter()
                buffer.append(rgb)
                self.frames += 1
                end = self.frames
                prediction = None
                if end >= self.window and (end - self.window) % self.stride == 0:
                    if self.skip_late and frames.qsize() >= self.stride:
                        self.skipped += 1  # the next window is complete already
                    else:
                        prediction = latest = self._predict(buffer, end, arrival)
                if self.out_video is not None:
                    if writer is None:
                        writer, temporary = self._open_writer(rgb)
                    writer.write(self._annotated(rgb, latest))
                if prediction is not None:
                    yield prediction
            if self.predictions == 0 and self.skipped == 0 and buffer:
                yield self._predict(buffer, self.frames, time.perf_counter())
            keep = True
        except (KeyboardInterrupt, GeneratorExit):
            keep = True
            raise
        finally:
            stop.set()
            decoder.join(timeout=1.0)
            self._container = None
            self._finish_video(writer, temporary, keep)

    def _open_writer(self, rgb: np.ndarray):
        from sifa.data.encoding import H264Writer
        from sifa.files import temporary_path

        self.out_video.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(self.out_video)
        height, width = even_crop(rgb).shape[:2]
        writer = H264Writer(temporary, rate=self.rate, height=height, width=width, format="mp4")
        return writer, temporary

    def _annotated(self, rgb: np.ndarray, latest: dict | None) -> np.ndarray:
        rgb = even_crop(rgb)
        return draw_predictions(rgb, latest["top"]) if latest is not None else rgb

    def _finish_video(self, writer, temporary: Path | None, keep: bool) -> None:
        """Close the annotated video and move it into place (as
        :func:`sifa.files.replace_atomically` does), or discard it."""
        if writer is None:
            return
        try:
            writer.close()
            if keep:
                os.replace(temporary, self.out_video)
        finally:
            temporary.unlink(missing_ok=True)
