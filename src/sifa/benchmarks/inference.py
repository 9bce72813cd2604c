"""Speed of the inference tools on synthetic videos with random weights: no download, no
checkpoint of yours.

For each model, in a temporary folder, a checkpoint of random weights is saved with a config
built from the defaults (``data.clip_len`` frames ``frame_interval`` 1 apart, test short side
and crop = the input size, one clip, one crop), and synthetic videos of the motion-order task
(:mod:`sifa.data.synthetic`, rendered at 64 px and resized to the input size) are written at
:data:`FPS` frames per second. Then:

- **feature extraction** (:func:`sifa.engine.features.extract_features`): videos per second
  over ``videos`` videos of ``2 x clip_len`` frames each, in batches of ``batch_size``, decoding
  in the main process (no DataLoader workers) included; a first batch is extracted untimed into
  another folder as a warm-up;
- **streaming prediction** (:meth:`sifa.engine.predict.Predictor.stream`): a
  ``stream_seconds`` video, read as fast as it decodes (or at its own pace with ``realtime``),
  one prediction every ``stride_seconds``; the latency of each prediction (the wall time from
  the arrival of its window's last frame to the prediction, see :mod:`sifa.engine.stream`),
  mean and 95th percentile.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from sifa.engine.resources import using_threads

FPS = 25  # frames per second of the synthetic videos
RENDER_SIZE = 64  # the synthetic task's frames are drawn at this size, then resized
RENDER_FRAMES = 32  # frames per rendered clip (a multiple of 8: two phases of whole windows)
NUM_LABELS = 8  # the synthetic task's classes (4 pairs), cycled over the clips


@dataclass(frozen=True)
class ModelSetting:
    """A model as the benchmark builds it: clip length, input size, switches, classes and the
    number of videos to extract features of."""

    frames: int = 16
    size: int = 224
    switches: dict = field(default_factory=dict)
    classes: int = 400
    videos: int = 12


def model_setting(name: str) -> ModelSetting:
    """The default setting of a registered model: `sifa demo`'s models (``sifa_resnet18``,
    ``c2d_resnet18``, ``tsm_resnet18``) as the demo trains them (8 frames of 64 px, its
    switches such as ``base_width=16``, 8 classes, 64 videos); any other model at 16 frames of
    224 px, its default switches, 400 classes (Kinetics-400), 12 videos."""
    from sifa.engine.demo import DEMO_DATA, DEMO_MODELS, DEMO_RECIPE
    from sifa.models import list_models

    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    if name in DEMO_MODELS:
        data = DEMO_RECIPE["data"]
        return ModelSetting(
            frames=data["clip_len"],
            size=data["test_crop_size"],
            switches=dict(DEMO_RECIPE["model"]["switches"]),
            classes=DEMO_DATA.num_pairs * 2,
            videos=64,
        )
    return ModelSetting()


@dataclass
class InferenceResult:
    model: str
    switches: dict
    frames: int  # clip length (data.clip_len)
    size: int  # input height and width
    classes: int
    batch_size: int
    videos: int  # videos timed for feature extraction
    extraction_s: float
    videos_per_s: float
    stream_seconds: float  # length of the streamed video
    fps: float
    stream_frames: int  # frames the stream read
    window: int  # frames per prediction window
    stride: int  # frames between predictions
    realtime: bool
    predictions: int
    skipped: int  # predictions skipped to keep up (realtime only)
    latency_mean_ms: float | None
    latency_p95_ms: float | None

    @property
    def clip(self) -> str:
        return f"{self.frames}x{self.size}x{self.size}"


def expected_predictions(frames: int, window: int, stride: int) -> int:
    """Predictions (made or skipped) on a stream of ``frames`` frames: one when the first
    ``window`` frames are in, then one every ``stride`` frames; one on what there is for a
    stream shorter than the window."""
    return 1 if frames < window else (frames - window) // stride + 1


def synthetic_frames(count: int, size: int, *, first: int = 0) -> np.ndarray:
    """``count`` uint8 RGB frames ``(count, size, size, 3)`` of the synthetic task: clips of
    :data:`RENDER_FRAMES` frames (labels cycled, clip indices from ``first``) joined and cut,
    resized from :data:`RENDER_SIZE` to ``size`` where they differ."""
    from sifa.data.synthetic import render_clip

    clips, total, number = [], 0, 0
    while total < count:
        index = first + number
        clips.append(render_clip(index % NUM_LABELS, index, size=RENDER_SIZE, frames=RENDER_FRAMES))
        total += RENDER_FRAMES
        number += 1
    frames = np.concatenate(clips)[:count]
    if size != RENDER_SIZE:
        frames = np.stack(
            [
                np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR))
                for f in frames
            ]
        )
    return frames


def make_checkpoint(folder: Path, name: str, setting: ModelSetting) -> Path:
    """A checkpoint of random weights (seed 0) of model ``name`` with a config of the defaults
    and the setting's clip length, input size and one view; returns the weights file."""
    from sifa.engine.checkpoint import save_checkpoint
    from sifa.engine.config import TrainConfig, to_yaml, validate
    from sifa.models import create_model

    config = OmegaConf.merge(
        OmegaConf.structured(TrainConfig),
        {
            "model": {"name": name, "switches": setting.switches},
            "data": {
                "clip_len": setting.frames,
                "frame_interval": 1,
                "sampling": "dense",
                "test_short_side": setting.size,
                "test_crop_size": setting.size,
                "test_clips": 1,
                "test_crops": 1,
            },
        },
    )
    validate(config, "inference benchmark")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, num_classes=setting.classes, **setting.switches)
    return save_checkpoint(
        folder,
        "last",
        model,
        config_yaml=to_yaml(config),
        class_names=[f"class_{i}" for i in range(setting.classes)],
        update=0,
    )


def _extraction(
    name: str, setting: ModelSetting, folder: Path, batch_size: int
) -> tuple[int, float]:
    """``(videos, seconds)`` of extracting the features of ``setting.videos`` videos, after
    an untimed warm-up batch."""
    from sifa.data.annotations import VideoRecord
    from sifa.data.synthetic import write_video
    from sifa.engine.features import FeatureExtractor, VideoSource, extract_features

    videos_folder = folder / "videos"
    videos_folder.mkdir(parents=True)
    warm = min(batch_size, setting.videos)
    paths = []
    for number in range(warm + setting.videos):  # distinct videos for the warm-up
        path = videos_folder / f"{number:03d}.mp4"
        count = 2 * setting.frames
        write_video(path, synthetic_frames(count, setting.size, first=number * 4), FPS)
        paths.append(path)
    extractor = FeatureExtractor(
        model=name,
        switches=setting.switches,
        frames=setting.frames,
        size=setting.size,
        clips=1,
        crops=1,
        device="cpu",
    )

    def source(chosen: list[Path]) -> VideoSource:
        return VideoSource([VideoRecord(p, -1) for p in chosen], videos_folder)

    extract_features(extractor, source(paths[:warm]), folder / "warm-up", batch_size=batch_size)
    timed = paths[warm:]
    start = time.perf_counter()
    result = extract_features(extractor, source(timed), folder / "features", batch_size=batch_size)
    elapsed = time.perf_counter() - start
    if result.written != len(timed) or result.unreadable:
        raise RuntimeError(f"{name}: features of {result.written} of {len(timed)} videos written")
    return len(timed), elapsed


def benchmark_inference(
    models: list[str] | None = None,
    *,
    frames: list[int] | None = None,
    sizes: list[int] | None = None,
    videos: list[int] | None = None,
    batch_size: int = 4,
    stride_seconds: float = 0.5,
    stream_seconds: float = 20.0,
    realtime: bool = False,
    threads: int | None = None,
) -> list[InferenceResult]:
    """Feature extraction throughput and streaming latency of each model (default:
    ``sifa_resnet18`` as `sifa demo` trains it and ``sifa_resnet50``). ``frames``, ``sizes``
    and ``videos``: one value for every model or one per model (default:
    :func:`model_setting`'s). ``threads``: torch threads (default: torch's choice)."""
    from sifa.data.synthetic import write_video
    from sifa.engine.predict import Predictor

    models = list(models or ["sifa_resnet18", "sifa_resnet50"])
    frames = _per_model("frames", frames, models)
    sizes = _per_model("sizes", sizes, models)
    videos = _per_model("videos", videos, models)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not stride_seconds > 0 or not stream_seconds > 0:
        raise ValueError("stride and stream seconds must be positive")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    settings = []
    for index, name in enumerate(models):
        default = model_setting(name)
        setting = ModelSetting(
            frames=frames[index] or default.frames,
            size=sizes[index] or default.size,
            switches=default.switches,
            classes=default.classes,
            videos=videos[index] or default.videos,
        )
        if setting.size % 2:
            raise ValueError(f"{name}: size must be even (H.264 yuv420p), got {setting.size}")
        settings.append(setting)

    results = []
    with using_threads(threads), tempfile.TemporaryDirectory(prefix="sifa-inference-") as scratch:
        for index, (name, setting) in enumerate(zip(models, settings, strict=True)):
            folder = Path(scratch) / f"{index:02d}-{name}"
            checkpoint = make_checkpoint(folder / "checkpoints", name, setting)
            count, elapsed = _extraction(name, setting, folder, batch_size)

            stream_video = folder / "stream.mp4"
            length = max(1, round(stream_seconds * FPS))
            write_video(stream_video, synthetic_frames(length, setting.size), FPS)
            predictor = Predictor(checkpoint, device="cpu")
            stream = predictor.stream(
                stream_video, stride_seconds=stride_seconds, topk=1, realtime=realtime
            )
            for _ in stream:
                pass
            summary = stream.summary()
            results.append(
                InferenceResult(
                    model=name,
                    switches=setting.switches,
                    frames=setting.frames,
                    size=setting.size,
                    classes=setting.classes,
                    batch_size=batch_size,
                    videos=count,
                    extraction_s=elapsed,
                    videos_per_s=count / elapsed,
                    stream_seconds=length / FPS,
                    fps=summary["fps"],
                    stream_frames=summary["frames"],
                    window=stream.window,
                    stride=stream.stride,
                    realtime=realtime,
                    predictions=summary["predictions"],
                    skipped=summary["skipped"],
                    latency_mean_ms=_ms(summary["latency_mean_s"]),
                    latency_p95_ms=_ms(summary["latency_p95_s"]),
                )
            )
    return results


def _per_model(option: str, values: list[int] | None, models: list[str]) -> list[int | None]:
    """One value per model: none given (defaults), one for all, or one each."""
    if not values:
        return [None] * len(models)
    if any(v < 1 for v in values):
        raise ValueError(f"{option} must be >= 1, got {values}")
    if len(values) == 1:
        return list(values) * len(models)
    if len(values) != len(models):
        raise ValueError(f"give one value of {option} for all models or one per model "
                         f"({len(models)}), got {len(values)}")  # fmt: skip
    return list(values)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def model_label(result: InferenceResult) -> str:
    """The model's name with its switches: ``sifa_resnet18 (base_width=16, dropout=0.0)``."""
    if not result.switches:
        return result.model
    switches = ", ".join(f"{k}={v}" for k, v in result.switches.items())
    return f"{result.model} ({switches})"


def format_inference(results: list[InferenceResult], setting: str) -> str:
    """A Markdown table: extraction videos/s, stream predictions (and skipped ones) and
    latency mean and 95th percentile per model."""
    lines = [
        setting,
        "",
        "| model | clip | extraction videos/s | stream predictions | latency mean ms "
        "| latency p95 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        predictions = f"{r.predictions}" + (f" ({r.skipped} skipped)" if r.skipped else "")
        mean = "—" if r.latency_mean_ms is None else f"{r.latency_mean_ms:.1f}"
        p95 = "—" if r.latency_p95_ms is None else f"{r.latency_p95_ms:.1f}"
        lines.append(
            f"| {model_label(r)} | {r.clip} | {r.videos_per_s:.2f} | {predictions} | {mean} "
            f"| {p95} |"
        )
    return "\n".join(lines)


def describe_setting(
    results: list[InferenceResult], threads: int, stride_seconds: float, realtime: bool
) -> str:
    """The line above the table."""
    if not results:
        return "no models"
    first = results[0]
    videos = " / ".join(str(r.videos) for r in results)
    reading = "at its own pace (--realtime)" if realtime else "as fast as it decodes"
    return (
        f"CPU, {threads} torch threads, random weights, 1 clip x 1 crop; feature extraction: "
        f"{videos} videos of 2 x clip frames, batch {first.batch_size}, decoding included, "
        f"after a warm-up batch; streaming: a {first.stream_seconds:g} s {first.fps:g} fps "
        f"video read {reading}, a prediction every {stride_seconds:g} s (top-1)"
    )
