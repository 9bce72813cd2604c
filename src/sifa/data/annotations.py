"""Reading the dataset formats users bring into ``(records, class_names)``.

- ``video_list`` (mmaction style): one line per video, ``relative/path.mp4 label``.
- ``frame_list``: ``relative/folder num_frames label``, frames named ``img_00001.jpg`` ...
- ``folder``: ``root/<class name>/<video file>``, classes sorted by name; hidden files (names
  starting with ``.``, such as macOS ``._*`` files and unfinished writes) are left out.
- ``kinetics_csv``: Kinetics-400 ``label,youtube_id,time_start,time_end,split`` files; videos
  named ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` either flat in ``root`` or in
  ``root/<label>/`` (spaces in labels kept or turned into ``_``), the layout found from the
  first rows; each video's extension (``.mp4``, ``.mkv``, ``.webm``: downloads mix them) is
  found in its folder's listing.
- ``ssv2_json``: Something-Something V2, a labels file (``{"Approaching something ...": "0"}``)
  and an annotation file (``[{"id": "78687", "template": "Approaching [something] ..."}]``);
  videos ``root/<id>.webm``, or ``root/<id>`` with another video extension where that file
  exists (``.mp4`` after ``sifa prepare``). Entries without a template (the test split) get
  label ``-1``.

For the list formats, class names come from a file with one name per line (``labels=``), or are
the label numbers themselves.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("video_list", "frame_list", "folder", "kinetics_csv", "ssv2_json")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
# The released videos are .webm; a prepared copy (sifa prepare) is .mp4.
SSV2_EXTENSIONS = (".webm", ".mp4", ".mkv")


class AnnotationError(ValueError):
    """An annotation file or dataset folder that cannot be read; the message names the file
    (and line)."""


@dataclass(frozen=True)
class VideoRecord:
    path: Path  # a video file, or a frame folder
    label: int  # -1 where the annotation gives none
    num_frames: int | None = None  # known up front for frame lists


@dataclass
class DatasetSpec:
    """Where a dataset lives and in which format (the ``data`` part of a config).

    ``annotations`` is the list, CSV or JSON file (not used by ``folder``); ``labels`` is the
    class-names file of the list formats or the labels JSON of ``ssv2_json``.
    """

    format: str
    root: str
    annotations: str | None = None
    labels: str | None = None
    backend: str = "pyav"
    frame_template: str = "img_{:05d}.jpg"
    frame_start_index: int = 1

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise AnnotationError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.format != "folder" and not self.annotations:
            raise AnnotationError(f"format {self.format!r} needs an annotations file")
        if self.format == "ssv2_json" and not self.labels:
            raise AnnotationError("format 'ssv2_json' needs the labels JSON file (labels=...)")
        if self.format == "frame_list":
            self.backend = "frames"


def _lines(path: str | os.PathLike):
    """``(line number, stripped line)`` of the non-empty, non-comment lines of a text file."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield number, line


def _integer(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AnnotationError(f"{where}: {what} must be an integer, got {text!r}") from None


def read_class_names(path: str | os.PathLike) -> list[str]:
    """One class name per line, in label order."""
    return [line for _, line in _lines(path)]


def _default_names(records: list[VideoRecord], names_file: str | None) -> list[str]:
    if names_file:
        names = read_class_names(names_file)
        top = max((r.label for r in records), default=-1)
        if top >= len(names):
            raise AnnotationError(f"{names_file} names {len(names)} classes but a label is {top}")
        return names
    return [str(i) for i in range(max((r.label for r in records), default=-1) + 1)]


def _read_columns(path, root, head: str, columns: tuple[str, ...]):
    """``(root / first field, integer columns)`` per line of ``head column ...`` lines; the
    first field may contain spaces."""
    for number, line in _lines(path):
        where = f"{path}:{number}"
        parts = line.rsplit(maxsplit=len(columns))
        if len(parts) != len(columns) + 1:
            raise AnnotationError(f"{where}: expected '{' '.join((head, *columns))}', got {line!r}")
        values = [
            _integer(text, name, where) for text, name in zip(parts[1:], columns, strict=True)
        ]
        yield Path(root) / parts[0], values


def read_video_list(path: str | os.PathLike, root: str | os.PathLike) -> list[VideoRecord]:
    """``relative/path.mp4 label`` per line (the path may contain spaces)."""
    return [
        VideoRecord(video, label)
        for video, (label,) in _read_columns(path, root, "path", ("label",))
    ]


def read_frame_list(path: str | os.PathLike, root: str | os.PathLike) -> list[VideoRecord]:
    """``relative/folder num_frames label`` per line."""
    return [
        VideoRecord(folder, label, frames)
        for folder, (frames, label) in _read_columns(path, root, "folder", ("num_frames", "label"))
    ]


def scan_video_folder(
    root: str | os.PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS
) -> tuple[list[VideoRecord], list[str]]:
    """Videos in ``root/<class name>/``; classes sorted by name, files by name."""
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"dataset folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    records = [
        VideoRecord(video, label)
        for label, name in enumerate(classes)
        for video in sorted((root / name).iterdir())
        if video.suffix.lower() in extensions and not video.name.startswith(".") and video.is_file()
    ]
    if not records:
        raise AnnotationError(
            f"no videos ({', '.join(extensions)}) found in class folders under {root}"
        )
    return records, classes


class _FolderListing:
    """The file names of folders, each listed once: finds a video whatever its extension
    without a ``stat`` per video and extension (slow on network file systems)."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def find(self, folder: Path, stem: str, extensions: tuple[str, ...]) -> Path | None:
        """``folder/<stem><extension>`` for the first extension that exists, else ``None``."""
        names = self._names.get(folder)
        if names is None:
            try:
                names = self._names[folder] = set(os.listdir(folder))
            except OSError:
                names = self._names[folder] = set()
        for extension in extensions:
            if stem + extension in names:
                return folder / (stem + extension)
        return None


def _kinetics_locator(root: Path, rows: list[dict], extensions: tuple[str, ...]):
    """How the first rows' videos are laid out under ``root``: a function row -> path."""
    layouts = {
        "by_class": lambda row, name: root / row["label"] / name,
        "by_class_underscored": lambda row, name: root / row["label"].replace(" ", "_") / name,
        "flat": lambda row, name: root / name,
    }
    for row in rows[:20]:
        stem = kinetics_file_stem(row)
        for layout in layouts.values():
            for extension in extensions:
                if layout(row, stem + extension).is_file():
                    return lambda r, lay=layout, ext=extension: lay(r, kinetics_file_stem(r) + ext)
    raise AnnotationError(
        f"none of the first videos of the CSV was found under {root} (looked for "
        f"<label>/<youtube_id>_<start>_<end>.mp4 and flat <youtube_id>_<start>_<end>.mp4)"
    )


def kinetics_file_stem(row: dict) -> str:
    """``<youtube_id>_<time_start:06d>_<time_end:06d>``, the public releases' file names."""
    return (
        f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
    )


def read_kinetics_csv(
    path: str | os.PathLike,
    root: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    extensions: tuple[str, ...] = (".mp4", ".mkv", ".webm"),
) -> tuple[list[VideoRecord], list[str]]:
    """Kinetics CSV rows; classes sorted by name unless ``class_names`` is given (pass the
    training split's names when reading the validation split)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"label", "youtube_id", "time_start", "time_end"} - set(reader.fieldnames or [])
        if missing:
            raise AnnotationError(f"{path}: missing columns {sorted(missing)}")
        rows = list(reader)
    if not rows:
        raise AnnotationError(f"{path}: no rows")
    names = class_names or sorted({row["label"] for row in rows})
    index = {name: i for i, name in enumerate(names)}
    locate = _kinetics_locator(Path(root), rows, extensions)
    listing = _FolderListing()
    records = []
    for number, row in enumerate(rows, 2):
        if row["label"] not in index:
            raise AnnotationError(f"{path}:{number}: unknown label {row['label']!r}")
        # The layout's path with the extension of the file that is there (the first rows'
        # extension where none is: a missing video is reported under that name).
        video = locate(row)
        video = listing.find(video.parent, kinetics_file_stem(row), extensions) or video
        records.append(VideoRecord(video, index[row["label"]]))
    return records, names


def _load_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}: not valid JSON ({error})") from error


def read_something_v2(
    annotations: str | os.PathLike,
    labels: str | os.PathLike,
    root: str | os.PathLike,
    *,
    extension: str | None = None,
) -> tuple[list[VideoRecord], list[str]]:
    """Something-Something V2 annotation and labels JSON files. Videos are ``root/<id>`` with
    ``extension``; by default, with the first of :data:`SSV2_EXTENSIONS` whose file exists
    (``.webm`` where none does)."""
    label_map = _load_json(labels)
    if not isinstance(label_map, dict):
        raise AnnotationError(f"{labels}: expected an object of 'class name': 'index'")
    names = [name for name, _ in sorted(label_map.items(), key=lambda item: int(item[1]))]
    index = {name: int(i) for name, i in label_map.items()}
    entries = _load_json(annotations)
    if not isinstance(entries, list):
        raise AnnotationError(f"{annotations}: expected a list of videos")
    listing = _FolderListing()
    records = []
    for position, entry in enumerate(entries):
        if "id" not in entry:
            raise AnnotationError(f"{annotations}: entry {position} has no 'id'")
        template = entry.get("template")
        label = -1
        if template is not None:
            name = template.replace("[", "").replace("]", "")
            if name not in index:
                raise AnnotationError(
                    f"{annotations}: entry {position} (id {entry['id']}) has template "
                    f"{template!r}, which is not in {labels}"
                )
            label = index[name]
        if extension is None:
            found = listing.find(Path(root), str(entry["id"]), SSV2_EXTENSIONS)
            video = found or Path(root) / f"{entry['id']}{SSV2_EXTENSIONS[0]}"
        else:
            video = Path(root) / f"{entry['id']}{extension}"
        records.append(VideoRecord(video, label))
    return records, names


def load_annotations(spec: DatasetSpec) -> tuple[list[VideoRecord], list[str]]:
    """Records and class names of the dataset a :class:`DatasetSpec` describes."""
    if spec.format == "video_list":
        records = read_video_list(spec.annotations, spec.root)
        return records, _default_names(records, spec.labels)
    if spec.format == "frame_list":
        records = read_frame_list(spec.annotations, spec.root)
        return records, _default_names(records, spec.labels)
    if spec.format == "folder":
        return scan_video_folder(spec.root)
    if spec.format == "kinetics_csv":
        names = read_class_names(spec.labels) if spec.labels else None
        return read_kinetics_csv(spec.annotations, spec.root, class_names=names)
    return read_something_v2(spec.annotations, spec.labels, spec.root)
