"""Scan a dataset for videos that cannot be read, before a long run trips over them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from tqdm import tqdm

from sifa.data.annotations import AnnotationError, DatasetSpec, VideoRecord
from sifa.data.datasets import VideoClipDataset
from sifa.data.decoding import VideoError, VideoReader
from sifa.files import yaml_problem

_SPEC_FIELDS = {f.name for f in dataclasses.fields(DatasetSpec)}


def check_record(record: VideoRecord, open_reader) -> VideoError | None:
    """Open the video, read its length, and decode its first and last frames (which finds
    missing, empty, undecodable and most truncated files)."""
    try:
        with open_reader(record) as reader:
            count = record.num_frames or reader.info.num_frames
            reader.read(sorted({0, count - 1}))
    except VideoError as error:
        return error
    except IndexError as error:  # a frame list promising more frames than the folder has
        return VideoError(record.path, str(error))
    return None


def check_records(
    records: list[VideoRecord],
    open_reader: Callable[[VideoRecord], VideoReader],
    *,
    workers: int = 4,
    progress: bool = True,
    description: str = "checking",
) -> list[VideoError]:
    """The errors of every unreadable record, in record order (threads: decoding releases the
    GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = tqdm(
            pool.map(lambda r: check_record(r, open_reader), records),
            total=len(records),
            desc=description,
            unit="video",
            disable=not progress,
        )
        return [error for error in results if error is not None]


def _spec_from_mapping(mapping: dict, where: str) -> DatasetSpec:
    known = {k: v for k, v in mapping.items() if k in _SPEC_FIELDS}
    try:
        return DatasetSpec(**known)
    except TypeError as error:
        raise AnnotationError(f"{where}: {error}") from error


def specs_from_yaml(path: str | Path) -> dict[str, DatasetSpec]:
    """The datasets a YAML file describes: one dataset (a mapping with ``format``), named
    datasets (``{train: {...}, val: {...}}``), or either under a top-level ``data`` key, as in
    a training config. Keys that do not describe where the data lives are ignored."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            document = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise AnnotationError(f"{path}: not valid YAML: {yaml_problem(error)}") from None
    if isinstance(document, dict) and isinstance(document.get("data"), dict):
        document = document["data"]
    if not isinstance(document, dict):
        raise AnnotationError(f"{path}: expected a mapping describing the dataset(s)")
    if "format" in document:
        return {"dataset": _spec_from_mapping(document, str(path))}
    specs = {
        name: _spec_from_mapping(value, f"{path}: {name}")
        for name, value in document.items()
        if isinstance(value, dict) and "format" in value
    }
    if not specs:
        raise AnnotationError(f"{path}: no dataset found (a mapping with a 'format' key)")
    return specs


def guess_spec(target: str | Path, *, format: str | None = None, root: str | None = None,
               labels: str | None = None, backend: str = "pyav") -> DatasetSpec:  # fmt: skip
    """A spec for an annotation file or a folder of class folders, the format guessed from the
    file when not given (``.csv``: Kinetics, ``.json``: Something-Something V2, ``.txt``: a
    video list, or a frame list when its lines have three fields)."""
    target = Path(target)
    if format is None:
        if target.is_dir():
            format = "folder"
        elif target.suffix == ".csv":
            format = "kinetics_csv"
        elif target.suffix == ".json":
            format = "ssv2_json"
        else:
            first = next((ln.split() for ln in target.read_text().splitlines() if ln.strip()), [])
            format = "frame_list" if len(first) == 3 and first[1].isdigit() else "video_list"
    if format == "folder":
        return DatasetSpec("folder", str(root or target), backend=backend)
    return DatasetSpec(
        format, str(root or target.parent), str(target), labels=labels, backend=backend
    )


def check_spec(spec: DatasetSpec, *, name: str = "dataset", workers: int = 4,
               progress: bool = True) -> tuple[int, list[VideoError]]:  # fmt: skip
    """``(number of videos, errors)`` for one dataset."""
    dataset = VideoClipDataset.from_spec(spec)
    errors = check_records(
        dataset.records, dataset.open, workers=workers, progress=progress, description=name
    )
    return len(dataset), errors
