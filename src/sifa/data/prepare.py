"""A training-ready copy of a dataset: every video re-encoded small, or cut into frame folders.

Decoding a 720p or 1080p video to train on 224-pixel crops spends most of its time on pixels
the resize throws away, and the long keyframe intervals of downloaded videos make every random
clip decode many frames it does not use. :func:`prepare_dataset` pays for that once:

- videos (the default): H.264 ``.mp4`` (libx264, yuv420p), the short side brought down to
  ``short_side`` pixels (a smaller video keeps its size: nothing is upscaled; sides are rounded
  to even numbers, as yuv420p needs), the source's frame rate (``fps`` only lowers it), a
  keyframe every ``keyframe_interval`` frames and no B-frames, so that a clip starting anywhere
  decodes at most ``keyframe_interval - 1`` frames before its first, and x264's ``fastdecode``
  tuning (no CABAC, no deblocking: on a 720p clip brought to 320 px, 1.3x faster decoding for
  a file 8% larger, frames as close to the source). Audio is dropped. The bytes written are the
  same from run to run, whatever the number of workers (:class:`~sifa.data.encoding.H264Writer`:
  one encoding thread, no macroblock tree). The output is constant-frame-rate: a
  variable-rate source gets frames repeated or dropped to fill the grid, as FFmpeg's ``fps``
  filter does, so that frame indices are the timestamps our readers compute.
- frame folders (``frames=True``): ``img_00001.jpg`` ... at the same size, JPEG quality
  ``jpeg_quality``, read by :class:`~sifa.data.decoding.FrameFolderReader`.

The copy keeps the source's layout under ``out`` and gets annotation files that describe it,
so that a config only changes its paths (:attr:`PrepareResult.spec`, written as
``out/dataset.yaml``):

============  ==========================================  =======================================
source        prepared videos                             prepared frame folders
============  ==========================================  =======================================
folder        ``out/<class>/<name>.mp4`` (every class     ``out/<class>/<name>/``,
              folder, even one left empty)                ``out/frame_list.txt``
video_list    the list's paths with ``.mp4``, the list    the paths without extension,
              as ``out/<list name>``                      ``out/<list stem>.txt``
kinetics_csv  ``<youtube_id>_<start>_<end>.mp4`` in the   the same names without extension,
              source's layout, the CSV (its rows)         ``out/<csv stem>.txt``
ssv2_json     ``out/<id>.mp4``, the annotation JSON (its  ``out/<id>/``, ``out/<json stem>.txt``
              entries) and the labels JSON
============  ==========================================  =======================================

The annotation files keep the rows (lines, entries) of the readable videos. Except for
``folder`` videos, ``out/classes.txt`` holds the class names in label order (the
labels of the source, even where a class loses every video). Frame folders come with a
``frame_list`` file (``relative/folder num_frames label``). ``frame_list`` sources are decoded
frames already and are refused.

A source that cannot be read (missing, empty, truncated, not a video, undecodable) does not stop
the run: it is left out of the annotation files and listed with the reason in
``out/prepare_report.json`` (:attr:`PrepareResult.unreadable`). A source whose decoding stops
early without an error counts as truncated when it gives fewer than 95% of the frames its
container states. A source listed twice is prepared once; two sources whose copies would get the
same name (``a.mp4`` and ``a.webm`` in one folder) cannot both be kept: the second is listed.

Every video file or frame folder is written under a temporary name (``.NAME.PID.tmp``) and
renamed when complete, so a killed run never leaves a part under the final name. A second run
into the same folder skips every output that exists, removes the temporaries of killed runs and
tries the unreadable sources again; it refuses other settings than the first run's
(``out/prepare_settings.json``), so that a copy never mixes two encodings.

Videos are prepared in ``workers`` processes (one decoding and one encoding thread each, the
efficient split for many files). A worker that crashes (a decoder fault, or killed for memory)
does not stop the run: the videos it may have held are tried again one at a time, and one that
kills its process again is listed as unreadable.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from math import ceil
from pathlib import Path

import av
import numpy as np
import yaml
from av.video.reformatter import VideoReformatter
from PIL import Image
from tqdm import tqdm

from sifa.data.annotations import DatasetSpec, VideoRecord, load_annotations
from sifa.data.decoding import (
    EmptyVideoError,
    VideoDecodeError,
    VideoError,
    check_video_file,
    count_frames,
    ffmpeg_reason,
    frame_timing,
    open_video_stream,
)
from sifa.data.encoding import H264Writer
from sifa.files import remove_stale_temporaries, replace_atomically, temporary_path

REPORT_NAME = "prepare_report.json"
SETTINGS_NAME = "prepare_settings.json"
DATASET_NAME = "dataset.yaml"
CLASSES_NAME = "classes.txt"
FRAME_TEMPLATE = "img_{:05d}.jpg"
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
    "veryslow",
)  # fmt: skip
# Decoding that stops early without an error: truncated when under this part of the frames the
# file holds by its index or packets.
_TRUNCATED_BELOW = 0.95
# A timestamp gap longer than this is broken timestamps, not a variable frame rate.
_MAX_REPEATS_SECONDS = 60


class PrepareError(ValueError):
    """Settings or a source that cannot be prepared; the message names the option or file."""


@dataclass(frozen=True)
class PrepareSettings:
    """How the copy is encoded (the ``sifa prepare`` options of the same names)."""

    short_side: int = 320  # pixels; smaller videos keep their size
    fps: float | None = None  # None: the source's rate; a lower source rate is kept
    crf: int = 23  # x264 constant rate factor: 0 lossless ... 51 worst; +6 halves the size
    keyframe_interval: int = 16  # frames between keyframes
    preset: str = "veryfast"  # x264 speed preset (encoding speed against file size)
    frames: bool = False  # JPEG frame folders instead of mp4 files
    jpeg_quality: int = 90  # 1 ... 95 (PIL's scale)

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, wanted: str) -> None:
            if not ok:
                option = "--" + name.replace("_", "-")
                value = getattr(self, name)
                raise PrepareError(f"{name} ({option}) must be {wanted}, got {value!r}")

        check(self.short_side >= 16, "short_side", "at least 16")
        check(self.fps is None or self.fps > 0, "fps", "positive")
        check(0 <= self.crf <= 51, "crf", "between 0 and 51")
        check(self.keyframe_interval >= 1, "keyframe_interval", "at least 1")
        check(self.preset in X264_PRESETS, "preset", f"one of {', '.join(X264_PRESETS)}")
        check(1 <= self.jpeg_quality <= 95, "jpeg_quality", "between 1 and 95")


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` did. ``unreadable``: ``(source, reason)`` in record order."""

    spec: DatasetSpec  # the prepared copy
    out: Path
    prepared: int
    already_done: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    removed_temporaries: int = 0

    @property
    def report(self) -> Path:
        return self.out / REPORT_NAME

    def summary(self) -> str:
        """``N prepared, M already done, K unreadable (see OUT/prepare_report.json)``."""
        return (
            f"{self.prepared} prepared, {self.already_done} already done, "
            f"{len(self.unreadable)} unreadable (see {self.report})"
        )


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the short side brought down to ``short_side`` (never up), the
    aspect ratio kept, both rounded down to even numbers."""
    scale = min(1.0, short_side / min(width, height))

    def even(side: float) -> int:
        return max(2, 2 * int(side / 2 + 1e-6))

    return even(width * scale), even(height * scale)


def output_path(source: Path, root: Path, out: Path, *, frames: bool) -> Path:
    """Where the prepared copy of ``source`` goes: its path under ``root`` moved to ``out``,
    with ``.mp4`` (a frame folder: no extension). A source outside ``root`` goes to
    ``out/external/<its absolute path>``."""
    source = Path(os.path.normpath(source))
    try:
        relative = source.relative_to(os.path.normpath(root))
    except ValueError:
        relative = Path("external") / Path(os.path.abspath(source)).relative_to("/")
    return out / (relative.with_suffix("") if frames else relative.with_suffix(".mp4"))


class _Source:
    """The video stream of a source file opened for sequential decoding on one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        check_video_file(path)
        self.container, self.stream = open_video_stream(path)
        self.stream.codec_context.thread_count = 1
        rate = self.stream.average_rate or self.stream.guessed_rate
        if not rate:
            self.container.close()
            raise VideoDecodeError(path, "has no frame rate")
        self.rate = Fraction(rate)

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    @property
    def size(self) -> tuple[int, int]:
        context = self.stream.codec_context
        return context.width, context.height

    def held_frames(self) -> int:
        """How many frames the file holds: by its index, or by its packets where the index
        does not list them evenly (see :func:`sifa.data.decoding.frame_timing`; an AVI that
        skips frames states more than it holds)."""
        container, stream = open_video_stream(self.path)
        try:
            return frame_timing(container, stream, self.path).num_frames
        finally:
            container.close()

    def frames(self, rate: Fraction, convert: Callable) -> Iterator:
        """``convert(frame)`` of every frame of a constant ``rate`` grid: output frame ``n``
        is the source frame nearest to ``n / rate`` seconds (as FFmpeg's ``fps`` filter picks
        them), so a lower rate drops frames and a gap in the timestamps repeats one. Raises
        :class:`VideoDecodeError` where decoding fails or stops early."""
        stream = self.stream
        start = stream.start_time or 0
        decoded = position = 0
        held = held_time = converted = failure = None  # the last source frame, not yet output
        packets = self.container.decode(stream)
        while True:
            try:
                frame = next(packets, None)
                if frame is None:
                    break
                decoded += 1
                if frame.pts is not None:
                    time = (frame.pts - start) * stream.time_base
                else:
                    time = 0 if held is None else held_time + 1 / self.rate
                # The slots closer to the held frame than to this one.
                count = 0 if held is None else ceil((held_time + time) / 2 * rate) - position
                if count > 0 and converted is None:
                    converted = convert(held)
            except (av.error.FFmpegError, ValueError) as error:
                reason = ffmpeg_reason(error)
                failure = f"decoding failed after {decoded - 1} frames ({reason})"
                break
            if count > _MAX_REPEATS_SECONDS * rate:
                failure = f"its timestamps jump by {float(time - held_time):.0f} s"
                break
            for _ in range(max(0, count)):
                yield converted
            position += max(0, count)
            if held is None or time >= held_time:  # a timestamp going back is left out
                held, held_time, converted = frame, time, None
        if failure is not None:
            raise VideoDecodeError(self.path, f"{failure}: truncated or corrupt file?")
        if held is None:
            raise EmptyVideoError(self.path, "the video stream holds no frames")
        holds = self.held_frames()
        if decoded < _TRUNCATED_BELOW * holds and holds - decoded > 2:
            raise VideoDecodeError(
                self.path,
                f"decoding stopped after {decoded} of the {holds} frames the file holds: "
                "truncated file?",
            )
        # The last frame fills its slots up to half an output frame after it.
        count = ceil(held_time * rate + Fraction(1, 2)) - position
        if count > 0:
            try:
                converted = convert(held)
            except (av.error.FFmpegError, ValueError) as error:
                reason = ffmpeg_reason(error)
                raise VideoDecodeError(
                    self.path, f"cannot convert its last frame ({reason})"
                ) from None
            for _ in range(count):
                yield converted


def _output_rate(source: _Source, fps: float | None) -> Fraction:
    if fps is None or fps >= source.rate:
        return source.rate
    return Fraction(fps).limit_denominator(1001)


def _write_mp4(source: _Source, path: Path, settings: PrepareSettings) -> int:
    width, height = output_size(*source.size, settings.short_side)
    rate = _output_rate(source, settings.fps)
    reformatter = VideoReformatter()
    options = {
        "crf": str(settings.crf),
        "preset": settings.preset,
        "tune": "fastdecode",
        "g": str(settings.keyframe_interval),
        "bf": "0",
    }

    def resize(frame):
        return reformatter.reformat(frame, width, height, "yuv420p", interpolation="AREA")

    with H264Writer(
        path, rate=rate, height=height, width=width, format="mp4", options=options
    ) as writer:
        for frame in source.frames(rate, resize):
            writer.write_yuv(frame)
    return writer.frames


def _write_frames(source: _Source, folder: Path, settings: PrepareSettings) -> int:
    width, height = output_size(*source.size, settings.short_side)
    reformatter = VideoReformatter()
    folder.mkdir(parents=True)

    def resize(frame) -> np.ndarray:
        return reformatter.reformat(
            frame, width, height, "rgb24", interpolation="AREA"
        ).to_ndarray()

    count = 0
    for count, image in enumerate(source.frames(_output_rate(source, settings.fps), resize), 1):
        Image.fromarray(image).save(
            folder / FRAME_TEMPLATE.format(count), quality=settings.jpeg_quality
        )
    return count


def prepare_video(source: str | os.PathLike, output: str | os.PathLike,
                  settings: PrepareSettings | None = None) -> int:  # fmt: skip
    """Write the prepared copy of one video (an ``.mp4`` file, or with ``settings.frames`` a
    frame folder) atomically to ``output``; returns its frame count. Raises
    :class:`~sifa.data.decoding.VideoError` for a source that cannot be read (nothing is left
    at ``output``), ``OSError`` where ``output`` cannot be written."""
    settings = settings or PrepareSettings()
    source, output = Path(source), Path(output)
    count = 0
    # The source is opened first, so that an unreadable one leaves no folder behind.
    with _Source(source) as opened:
        if not settings.frames:

            def write(temporary: Path) -> None:
                nonlocal count
                count = _write_mp4(opened, temporary, settings)

            replace_atomically(output, write)
            return count
        # A folder: written whole under a temporary name, then renamed.
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(output)
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            count = _write_frames(opened, temporary, settings)
            os.replace(temporary, output)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    return count


_Job = tuple[Path, Path]  # (source, output)
_CRASHED = "the process preparing it died (a crash in the decoder, or killed for lack of memory)"


def _prepare_job(job: _Job, settings: PrepareSettings) -> tuple[int | None, str | None]:
    """``(frame count, None)``, or ``(None, why the source is unreadable)``."""
    try:
        return prepare_video(*job, settings), None
    except VideoError as error:
        return None, error.problem


def _end_with_parent(parent: int) -> None:
    """Pool worker start-up: end with the preparing process, also when it is killed
    (``kill -9``) and cannot stop its workers itself. Linux delivers SIGKILL to the worker
    when its parent dies; elsewhere a thread watches for the parent to be gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _run_jobs(jobs: list[_Job], settings: PrepareSettings, workers: int) -> Iterator:
    """``(job, (count, reason))`` as the jobs finish, ``workers`` processes at a time (0: in
    this process). Jobs that were running when a worker died are tried again alone at the
    end."""
    if workers == 0:
        for job in jobs:
            yield job, _prepare_job(job, settings)
        return
    pending, suspects = deque(jobs), []
    while pending:
        with ProcessPoolExecutor(
            min(workers, len(pending)), initializer=_end_with_parent, initargs=(os.getpid(),)
        ) as pool:
            running: dict = {}
            while pending or running:
                while pending and len(running) < workers:
                    job = pending.popleft()
                    running[pool.submit(_prepare_job, job, settings)] = job
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for future in finished:
                    job = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        suspects.append(job)
                        broken = True
                    else:
                        yield job, result
                if broken:  # every job still running went down with the pool
                    suspects.extend(running.values())
                    break
    for job in suspects:
        with ProcessPoolExecutor(1, initializer=_end_with_parent, initargs=(os.getpid(),)) as pool:
            try:
                result = pool.submit(_prepare_job, job, settings).result()
            except BrokenProcessPool:
                result = None, _CRASHED
        yield job, result


def _check_settings(out: Path, settings: PrepareSettings) -> None:
    """Record ``settings`` in ``out``, or refuse ones that differ from a previous run's."""
    path = out / SETTINGS_NAME
    wanted = asdict(settings)
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            before = None
        if isinstance(before, dict) and before != wanted:
            changed = [
                f"{f.name} {before.get(f.name)!r} there, {wanted[f.name]!r} now"
                for f in fields(settings)
                if before.get(f.name) != wanted[f.name]
            ]
            raise PrepareError(
                f"{out} holds a copy prepared with other settings ({'; '.join(changed)}): "
                "prepare into another folder, or pass the same options"
            )
        if before == wanted:
            return
    _write_text(path, json.dumps(wanted, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def _relative(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _write_annotations(
    spec: DatasetSpec,
    out: Path,
    records: list[VideoRecord],
    kept: list[tuple[VideoRecord, Path]],
    class_names: list[str],
    counts: dict[Path, int],
    settings: PrepareSettings,
) -> DatasetSpec:
    """The annotation files of the prepared copy and the spec that reads them. ``records``:
    every record of the source (one per row or entry of its file, in order); ``kept``: the
    readable ones with their outputs."""
    root = str(out.resolve())
    classes = out / CLASSES_NAME

    def written(name: str) -> str:
        return str((out / name).resolve())

    if spec.format != "folder" or settings.frames:
        _write_text(classes, "".join(f"{name}\n" for name in class_names))
    if settings.frames:
        name = f"{Path(spec.annotations).stem}.txt" if spec.annotations else "frame_list.txt"
        lines = [
            f"{_relative(output, out)} {counts[record.path]} {record.label}\n"
            for record, output in kept
        ]
        _write_text(out / name, "".join(lines))
        return DatasetSpec("frame_list", root, written(name), written(CLASSES_NAME))
    backend = spec.backend if spec.backend in ("pyav", "decord") else "pyav"
    if spec.format == "folder":
        # Every class folder, so that a class whose videos were all unreadable keeps its label.
        for name in class_names:
            (out / name).mkdir(parents=True, exist_ok=True)
        return DatasetSpec("folder", root, backend=backend)
    name = Path(spec.annotations).name
    if spec.format == "video_list":
        lines = [f"{_relative(output, out)} {record.label}\n" for record, output in kept]
        _write_text(out / name, "".join(lines))
        return DatasetSpec("video_list", root, written(name), written(CLASSES_NAME), backend)
    kept_sources = {record.path for record, _ in kept}
    if spec.format == "kinetics_csv":
        with open(spec.annotations, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames

        def write_csv(temporary: Path) -> None:
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, columns)
                writer.writeheader()
                for row, record in zip(rows, records, strict=True):
                    if record.path in kept_sources:
                        writer.writerow(row)

        replace_atomically(out / name, write_csv)
        return DatasetSpec("kinetics_csv", root, written(name), written(CLASSES_NAME), backend)
    # ssv2_json: the labels file as it is, the entries of the readable videos.
    with open(spec.annotations, encoding="utf-8") as handle:
        entries = json.load(handle)
    chosen = [e for e, r in zip(entries, records, strict=True) if r.path in kept_sources]
    _write_text(out / name, json.dumps(chosen, indent=1, ensure_ascii=False) + "\n")
    labels = Path(spec.labels).name
    replace_atomically(out / labels, lambda temporary: shutil.copyfile(spec.labels, temporary))
    return DatasetSpec("ssv2_json", root, written(name), written(labels), backend)


def dataset_yaml(specs: DatasetSpec | dict[str, DatasetSpec]) -> str:
    """YAML of one dataset entry (a mapping with ``format``, ``root`` ...), or of named ones
    under ``data:`` (``{"train": spec, "val": spec}``), as a config's ``data`` section takes it
    and ``sifa check-data`` reads it."""

    def entry(spec: DatasetSpec) -> dict:
        values = {"format": spec.format, "root": spec.root}
        values.update({k: getattr(spec, k) for k in ("annotations", "labels") if getattr(spec, k)})
        if spec.backend not in ("pyav", "frames"):
            values["backend"] = spec.backend
        return values

    if isinstance(specs, DatasetSpec):
        document = entry(specs)
    else:
        document = {"data": {name: entry(spec) for name, spec in specs.items()}}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def prepare_dataset(
    spec: DatasetSpec,
    out: str | os.PathLike,
    settings: PrepareSettings | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    description: str = "preparing",
) -> PrepareResult:
    """Prepare every video of the dataset ``spec`` describes into ``out`` (module docstring);
    ``workers`` processes (default: one per core; 0: in this process). Writes the annotation
    files, ``out/dataset.yaml`` and ``out/prepare_report.json``. Raises
    :class:`PrepareError` or :class:`~sifa.data.annotations.AnnotationError` for sources and
    settings that cannot be used, before any video is written."""
    settings = settings or PrepareSettings()
    out, root = Path(out), Path(spec.root)
    if spec.format == "frame_list":
        raise PrepareError(
            f"{spec.annotations}: a frame_list dataset is decoded frames already; prepare "
            "the videos it was made from"
        )
    if not root.is_dir():
        raise PrepareError(f"source folder not found: {root}")
    if out.resolve() == root.resolve():
        raise PrepareError(f"{out}: the output folder must not be the source folder")
    if spec.format == "folder" and out.resolve().is_relative_to(root.resolve()):
        raise PrepareError(f"{out}: the output folder must not be inside the class folders")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise PrepareError(f"workers (--workers) must be 0 or more, got {workers}")
    records, class_names = load_annotations(spec)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)

    # One job per source file; a source listed twice is prepared once.
    outputs = [output_path(r.path, root, out, frames=settings.frames) for r in records]
    jobs: dict[Path, Path] = {}
    owners: dict[Path, Path] = {}
    failures: dict[Path, str] = {}
    for record, output in zip(records, outputs, strict=True):
        owner = owners.setdefault(output, record.path)
        if owner != record.path:
            failures[record.path] = f"its prepared copy {output} would replace that of {owner}"
        else:
            jobs[record.path] = output
    folders = {o.parent for o in jobs.values()}

    def remove_temporaries_of_dead_writers() -> int:
        return sum(len(remove_stale_temporaries(folder)) for folder in folders)

    removed = remove_temporaries_of_dead_writers()  # left by a killed run
    finished = {s: o for s, o in jobs.items() if (o.is_dir() if settings.frames else o.is_file())}
    counts = (
        {s: count_frames(o, FRAME_TEMPLATE) for s, o in finished.items()} if settings.frames else {}
    )
    todo = [(s, o) for s, o in jobs.items() if s not in finished]

    bar = tqdm(
        total=len(jobs), initial=len(finished), desc=description, unit="video",
        disable=not progress, dynamic_ncols=True,
    )  # fmt: skip
    with bar:
        for (source, _), (count, reason) in _run_jobs(todo, settings, workers):
            if reason is None:
                counts[source] = count
            else:
                failures[source] = reason
            bar.update()
            bar.set_postfix(unreadable=len(failures), refresh=False)
    removed += remove_temporaries_of_dead_writers()  # left by workers that died mid-video

    kept = [(r, o) for r, o in zip(records, outputs, strict=True) if r.path not in failures]
    prepared_spec = _write_annotations(spec, out, records, kept, class_names, counts, settings)
    unreadable = [
        (str(s), failures[s]) for s in dict.fromkeys(r.path for r in records) if s in failures
    ]
    result = PrepareResult(
        prepared_spec, out, len(todo) - sum(s in failures for s, _ in todo), len(finished),
        unreadable, removed,
    )  # fmt: skip
    _write_text(out / DATASET_NAME, dataset_yaml(prepared_spec))
    report = {
        "source": {k: getattr(spec, k) for k in ("format", "root", "annotations", "labels")},
        "settings": asdict(settings),
        "dataset": asdict(prepared_spec),
        "videos": len(dict.fromkeys(r.path for r in records)),
        "prepared": result.prepared,
        "already_done": result.already_done,
        "removed_temporaries": removed,
        "unreadable": [{"source": s, "reason": why} for s, why in unreadable],
    }
    _write_text(out / REPORT_NAME, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return result
