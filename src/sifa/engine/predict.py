"""``sifa predict``: class scores for videos, whole or in sliding windows."""

from __future__ import annotations

from pathlib import Path

import torch

from sifa.data.decoding import open_video
from sifa.data.sampling import DenseSampler, SegmentSampler
from sifa.engine import distributed
from sifa.engine.builders import build_eval_transform, build_sampler
from sifa.engine.checkpoint import load_model, resolve_checkpoint
from sifa.engine.stream import PredictionStream, window_length


class Predictor:
    """A trained model with the clip sampling and test views of its training config.

    Each clip (``data.clip_len`` frames sampled as in testing: ``data.frame_interval`` apart,
    or one from each of ``data.clip_len`` segments with ``data.sampling: segment``) is viewed with
    ``data.test_crops`` crops of ``data.test_crop_size`` after resizing the short side to
    ``data.test_short_side``; the softmaxes of all views are averaged. :attr:`checkpoint` is
    the weights file used (a run folder gives its ``best``, else ``last``, as for ``sifa eval``).
    A video that cannot be read raises its :class:`~sifa.data.decoding.VideoError`: no other
    video's scores ever stand in for it.
    """

    def __init__(self, checkpoint: str | Path, *, device: str = "auto", backend: str = "pyav"):
        self.device = distributed.setup(device).device
        self.checkpoint = resolve_checkpoint(checkpoint)
        self.model, self.config, self.class_names = load_model(self.checkpoint, self.device)
        self.transform = build_eval_transform(self.config)
        self.backend = backend

    def _sampler(self, clips: int) -> DenseSampler | SegmentSampler:
        return build_sampler(self.config, training=False, clips=clips)

    @torch.no_grad()
    def probabilities(self, reader, first: int, count: int, clips: int) -> torch.Tensor:
        """Average class probabilities of ``clips`` clips within frames ``[first, first+count)``
        of ``reader`` (an open video, or anything with ``read(indices) -> uint8 (N, H, W, 3)``)."""
        indices = self._sampler(clips)(count) + first
        frames = reader.read(indices.reshape(-1))
        views = []
        for clip in frames.view(*indices.shape, *frames.shape[1:]):
            view = self.transform(clip)
            views.append(view if view.dim() == 5 else view.unsqueeze(0))
        logits = self.model(torch.cat(views).to(self.device))
        return logits.float().softmax(-1).mean(0).cpu()

    def top(self, probabilities: torch.Tensor, k: int) -> list[dict]:
        """The ``k`` most probable classes, ``[{"label", "score"}]``, scores rounded to 6 places."""
        scores, labels = probabilities.topk(min(k, len(self.class_names)))
        return [
            {"label": self.class_names[i], "score": round(float(s), 6)}
            for s, i in zip(scores, labels, strict=True)
        ]

    def predict(self, video: str | Path, *, topk: int = 5, window_seconds: float | None = None):
        """``{"video", "frames", "fps", "top": [{"label", "score"}], "windows": [...]}``; with
        ``window_seconds``, consecutive windows of that length are scored one by one (one clip
        each) and ``top`` is their average."""
        with open_video(video, self.backend) as reader:
            info = reader.info
            result = {"video": str(video), "frames": info.num_frames, "fps": info.fps}
            if not window_seconds:
                probabilities = self.probabilities(
                    reader, 0, info.num_frames, self.config.data.test_clips
                )
                return {**result, "top": self.top(probabilities, topk)}
            if not info.fps:
                raise ValueError(f"{video}: no frame rate, so --window-seconds cannot apply")
            length = window_length(window_seconds, info.fps)
            windows, total = [], torch.zeros(len(self.class_names))
            for first in range(0, info.num_frames, length):
                count = min(length, info.num_frames - first)
                probabilities = self.probabilities(reader, first, count, 1)
                total += probabilities
                windows.append(
                    {
                        "start_s": round(reader.frame_time(first), 3),
                        "end_s": round(reader.frame_time(first + count), 3),
                        "top": self.top(probabilities, topk),
                    }
                )
        return {**result, "top": self.top(total / len(windows), topk), "windows": windows}

    def annotate(
        self,
        video: str | Path,
        out_video: str | Path,
        *,
        topk: int = 5,
        window_seconds: float | None = None,
    ) -> dict:
        """:meth:`predict`, and ``video`` written to ``out_video`` with the top-k labels and
        scores drawn on every frame: each window's on its frames with ``window_seconds``, else
        the whole video's (see :func:`sifa.engine.annotate.write_annotated_video`). Returns
        the prediction."""
        from sifa.engine.annotate import write_annotated_video

        result = self.predict(video, topk=topk, window_seconds=window_seconds)
        windows = result.get("windows")
        if windows:
            length = window_length(window_seconds, result["fps"])

            def top_of_frame(index: int) -> list[dict]:
                return windows[min(index // length, len(windows) - 1)]["top"]
        else:

            def top_of_frame(index: int) -> list[dict]:
                return result["top"]

        write_annotated_video(video, out_video, top_of_frame)
        return result

    def stream(self, source: str | Path, **options) -> PredictionStream:
        """Predictions on ``source`` as its frames arrive: a
        :class:`~sifa.engine.stream.PredictionStream` (iterate it for one dict per stride;
        ``options``: ``stride_seconds``, ``window_seconds``, ``topk``, ``input_format``,
        ``input_options``, ``realtime``, ``skip_late``, ``out_video``)."""
        return PredictionStream(self, source, **options)
