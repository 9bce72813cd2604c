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

# Windows whose views are read before they are scored together (see Predictor.predict).
WINDOWS_PER_CALL = 8


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

    def clip_views(self, reader, first: int, count: int, clips: int) -> torch.Tensor:
        """The network inputs for ``clips`` clips within frames ``[first, first+count)`` of
        ``reader`` (an open video, or anything with ``read(indices) -> uint8 (N, H, W, 3)``):
        every test view of every clip, ``(views, C, T, H, W)`` on the CPU."""
        indices = self._sampler(clips)(count) + first
        frames = reader.read(indices.reshape(-1))
        views = []
        for clip in frames.view(*indices.shape, *frames.shape[1:]):
            view = self.transform(clip)
            views.append(view if view.dim() == 5 else view.unsqueeze(0))
        return torch.cat(views)

    @torch.no_grad()
    def score(self, views: torch.Tensor) -> torch.Tensor:
        """Class probabilities of each view, ``(views, classes)`` on the CPU."""
        return self.model(views.to(self.device)).float().softmax(-1).cpu()

    def score_groups(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """The average class probabilities of each group of views, one model call per group
        (:class:`sifa.serve.batching.ClipBatcher` offers the same with groups of several
        callers batched together)."""
        return [self.score(views).mean(0) for views in groups]

    def probabilities(self, reader, first: int, count: int, clips: int) -> torch.Tensor:
        """Average class probabilities of ``clips`` clips within frames ``[first, first+count)``
        of ``reader`` (see :meth:`clip_views`)."""
        return self.score(self.clip_views(reader, first, count, clips)).mean(0)

    def top(self, probabilities: torch.Tensor, k: int) -> list[dict]:
        """The ``k`` most probable classes, ``[{"label", "score"}]``, scores rounded to 6 places."""
        scores, labels = probabilities.topk(min(k, len(self.class_names)))
        return [
            {"label": self.class_names[i], "score": round(float(s), 6)}
            for s, i in zip(scores, labels, strict=True)
        ]

    def predict(
        self,
        video: str | Path,
        *,
        topk: int = 5,
        window_seconds: float | None = None,
        score_groups=None,
        name: str | None = None,
    ) -> dict:
        """``{"video", "frames", "fps", "top": [{"label", "score"}], "windows": [...]}``; with
        ``window_seconds``, consecutive windows of that length are scored one by one (one clip
        each) and ``top`` is their average. ``score_groups`` replaces :meth:`score_groups` (a
        server's batcher); ``name`` is what ``"video"`` says (default: the path)."""
        score_groups = score_groups or self.score_groups
        with open_video(video, self.backend) as reader:
            info = reader.info
            result = {"video": str(video) if name is None else name,
                      "frames": info.num_frames, "fps": info.fps}  # fmt: skip
            if not window_seconds:
                views = self.clip_views(reader, 0, info.num_frames, self.config.data.test_clips)
                (probabilities,) = score_groups([views])
                return {**result, "top": self.top(probabilities, topk)}
            if not info.fps:
                raise ValueError(f"{video}: no frame rate, so --window-seconds cannot apply")
            length = window_length(window_seconds, info.fps)
            spans = [
                (first, min(length, info.num_frames - first))
                for first in range(0, info.num_frames, length)
            ]
            windows, total = [], torch.zeros(len(self.class_names))
            # A few windows at a time: a long video's views never all sit in memory at once.
            for chunk in range(0, len(spans), WINDOWS_PER_CALL):
                part = spans[chunk : chunk + WINDOWS_PER_CALL]
                scored = score_groups([self.clip_views(reader, f, n, 1) for f, n in part])
                for (first, count), probabilities in zip(part, scored, strict=True):
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
        score_groups=None,
        name: str | None = None,
    ) -> dict:
        """:meth:`predict` (``score_groups`` and ``name`` as there), and ``video`` written to
        ``out_video`` with the top-k labels and scores drawn on every frame: each window's on
        its frames with ``window_seconds``, else the whole video's (see
        :func:`sifa.engine.annotate.write_annotated_video`). Returns the prediction."""
        from sifa.engine.annotate import write_annotated_video

        result = self.predict(
            video, topk=topk, window_seconds=window_seconds, score_groups=score_groups, name=name
        )
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
