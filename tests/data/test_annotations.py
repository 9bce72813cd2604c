"""Every dataset format, read from fixtures the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sifa.data.annotations import (
    AnnotationError,
    DatasetSpec,
    VideoRecord,
    load_annotations,
    read_frame_list,
    read_kinetics_csv,
    read_something_v2,
    read_video_list,
    scan_video_folder,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_video_list_with_class_names_file(tmp_path):
    (tmp_path / "train.txt").write_text(
        "# comment\nclips/a.mp4 0\n\nclips/with space.mp4 2\nclips/c.mp4 1\n"
    )
    (tmp_path / "classes.txt").write_text("jump\nrun\nswim\n")
    spec = DatasetSpec(
        "video_list",
        str(tmp_path),
        str(tmp_path / "train.txt"),
        labels=str(tmp_path / "classes.txt"),
    )
    records, names = load_annotations(spec)
    assert names == ["jump", "run", "swim"]
    assert records == [
        VideoRecord(tmp_path / "clips/a.mp4", 0),
        VideoRecord(tmp_path / "clips/with space.mp4", 2),
        VideoRecord(tmp_path / "clips/c.mp4", 1),
    ]


def test_video_list_without_names_uses_label_numbers(tmp_path):
    (tmp_path / "list.txt").write_text("a.mp4 3\nb.mp4 1\n")
    records, names = load_annotations(
        DatasetSpec("video_list", "/data", str(tmp_path / "list.txt"))
    )
    assert names == ["0", "1", "2", "3"] and records[0].path == Path("/data/a.mp4")


@pytest.mark.parametrize(
    "content, message",
    [
        ("a.mp4\n", r"list.txt:1: expected 'path label', got 'a.mp4'"),
        ("a.mp4 0\nb.mp4 x\n", r"list.txt:2: label must be an integer, got 'x'"),
    ],
)
def test_video_list_errors_name_file_and_line(tmp_path, content, message):
    (tmp_path / "list.txt").write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_video_list(tmp_path / "list.txt", tmp_path)


def test_class_names_file_too_short(tmp_path):
    (tmp_path / "list.txt").write_text("a.mp4 5\n")
    (tmp_path / "names.txt").write_text("one\ntwo\n")
    spec = DatasetSpec(
        "video_list", str(tmp_path), str(tmp_path / "list.txt"), str(tmp_path / "names.txt")
    )
    with pytest.raises(AnnotationError, match=r"names.txt names 2 classes but a label is 5"):
        load_annotations(spec)


def test_frame_list(tmp_path):
    (tmp_path / "frames.txt").write_text("videos/v1 120 4\nvideos/v 2 33 0\n")
    assert read_frame_list(tmp_path / "frames.txt", "/r") == [
        VideoRecord(Path("/r/videos/v1"), 4, 120),
        VideoRecord(Path("/r/videos/v 2"), 0, 33),
    ]
    (tmp_path / "bad.txt").write_text("videos/v1 many 4\n")
    with pytest.raises(AnnotationError, match=r"bad.txt:1: num_frames must be an integer"):
        read_frame_list(tmp_path / "bad.txt", "/r")
    spec = DatasetSpec("frame_list", "/r", str(tmp_path / "frames.txt"), backend="pyav")
    assert spec.backend == "frames"


def test_folder_of_videos(tmp_path):
    for path in ["walk/b.mp4", "walk/a.MKV", "run/x.webm", "run/notes.txt", "empty/.keep"]:
        touch(tmp_path / path)
    records, names = scan_video_folder(tmp_path)
    assert names == ["empty", "run", "walk"]
    assert records == [
        VideoRecord(tmp_path / "run/x.webm", 1),
        VideoRecord(tmp_path / "walk/a.MKV", 2),
        VideoRecord(tmp_path / "walk/b.mp4", 2),
    ]
    with pytest.raises(AnnotationError, match=r"no videos .* found in class folders under"):
        scan_video_folder(tmp_path / "empty")
    with pytest.raises(AnnotationError, match=r"dataset folder not found: .*nowhere"):
        scan_video_folder(tmp_path / "nowhere")


KINETICS_CSV = """label,youtube_id,time_start,time_end,split
playing guitar,abc123XYZ_-,30,40,train
abseiling,--07WQ2iBlw,1,11,train
playing guitar,zzz,0,10,train
"""


@pytest.mark.parametrize(
    "layout",
    [
        "{root}/{label}/{name}.mp4",
        "{root}/{label_}/{name}.mp4",
        "{root}/{name}.mkv",
    ],
)
def test_kinetics_csv_layouts(tmp_path, layout):
    root = tmp_path / "k400"
    rows = [
        ("playing guitar", "abc123XYZ_-_000030_000040"),
        ("abseiling", "--07WQ2iBlw_000001_000011"),
    ]
    for label, name in rows:
        touch(
            Path(layout.format(root=root, label=label, label_=label.replace(" ", "_"), name=name))
        )
    (tmp_path / "train.csv").write_text(KINETICS_CSV)
    records, names = read_kinetics_csv(tmp_path / "train.csv", root)
    assert names == ["abseiling", "playing guitar"]
    assert [r.label for r in records] == [1, 0, 1]
    expected = layout.format(
        root=root, label="playing guitar", label_="playing_guitar", name="zzz_000000_000010"
    )
    assert records[2].path == Path(expected)


def test_kinetics_csv_problems(tmp_path):
    (tmp_path / "train.csv").write_text(KINETICS_CSV)
    with pytest.raises(AnnotationError, match=r"none of the first videos of the CSV was found"):
        read_kinetics_csv(tmp_path / "train.csv", tmp_path)
    (tmp_path / "bad.csv").write_text("label,youtube_id\nx,y\n")
    with pytest.raises(
        AnnotationError, match=r"bad.csv: missing columns \['time_end', 'time_start'\]"
    ):
        read_kinetics_csv(tmp_path / "bad.csv", tmp_path)
    touch(tmp_path / "abc123XYZ_-_000030_000040.mp4")
    with pytest.raises(AnnotationError, match=r"train.csv:3: unknown label 'abseiling'"):
        read_kinetics_csv(tmp_path / "train.csv", tmp_path, class_names=["playing guitar"])


def test_something_something_v2(tmp_path):
    (tmp_path / "labels.json").write_text(
        json.dumps(
            {
                "Pushing something from left to right": "1",
                "Approaching something with your camera": "0",
            }
        )
    )
    (tmp_path / "train.json").write_text(
        json.dumps(
            [
                {
                    "id": "78687",
                    "label": "pushing a cup",
                    "template": "Pushing [something] from left to right",
                    "placeholders": ["a cup"],
                },
                {"id": "42326", "template": "Approaching [something] with your camera"},
                {"id": "1420"},
            ]
        )
    )
    spec = DatasetSpec(
        "ssv2_json",
        str(tmp_path / "videos"),
        str(tmp_path / "train.json"),
        str(tmp_path / "labels.json"),
    )
    records, names = load_annotations(spec)
    assert names == [
        "Approaching something with your camera",
        "Pushing something from left to right",
    ]
    assert records == [
        VideoRecord(tmp_path / "videos/78687.webm", 1),
        VideoRecord(tmp_path / "videos/42326.webm", 0),
        VideoRecord(tmp_path / "videos/1420.webm", -1),
    ]
    (tmp_path / "odd.json").write_text(
        json.dumps([{"id": "1", "template": "Juggling [something]"}])
    )
    with pytest.raises(AnnotationError, match=r"odd.json: entry 0 \(id 1\) has template 'Juggling"):
        read_something_v2(tmp_path / "odd.json", tmp_path / "labels.json", tmp_path)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(AnnotationError, match=r"broken.json: not valid JSON"):
        read_something_v2(tmp_path / "broken.json", tmp_path / "labels.json", tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(format="csv", root="r", annotations="a"), r"format must be one of"),
        (dict(format="video_list", root="r"), r"format 'video_list' needs an annotations file"),
        (dict(format="ssv2_json", root="r", annotations="a"), r"needs the labels JSON file"),
    ],
)
def test_spec_validation(kwargs, message):
    with pytest.raises(AnnotationError, match=message):
        DatasetSpec(**kwargs)


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(AnnotationError, match=r"annotation file not found: .*absent.txt"):
        read_video_list(tmp_path / "absent.txt", tmp_path)


def test_videos_are_found_whatever_their_extension(tmp_path):
    """Kinetics downloads mix .mp4, .mkv and .webm; a prepared Something-Something copy is .mp4;
    hidden files (macOS ``._*``, unfinished writes) are not videos."""
    root = tmp_path / "k400"
    touch(root / "playing guitar/abc123XYZ_-_000030_000040.mp4")
    touch(root / "playing guitar/zzz_000000_000010.webm")
    (tmp_path / "train.csv").write_text(KINETICS_CSV)
    records, _ = read_kinetics_csv(tmp_path / "train.csv", root)
    assert [r.path.relative_to(root).as_posix() for r in records] == [
        "playing guitar/abc123XYZ_-_000030_000040.mp4",
        "abseiling/--07WQ2iBlw_000001_000011.mp4",  # missing: named with the first extension
        "playing guitar/zzz_000000_000010.webm",
    ]
    (tmp_path / "labels.json").write_text(json.dumps({"Holding something": "0"}))
    (tmp_path / "val.json").write_text(json.dumps([{"id": "1"}, {"id": "2"}]))
    touch(tmp_path / "videos/1.mp4")
    records, _ = read_something_v2(
        tmp_path / "val.json", tmp_path / "labels.json", tmp_path / "videos"
    )
    assert [r.path.name for r in records] == ["1.mp4", "2.webm"]
    records, _ = read_something_v2(
        tmp_path / "val.json", tmp_path / "labels.json", tmp_path / "videos", extension=".webm"
    )
    assert [r.path.name for r in records] == ["1.webm", "2.webm"]
    touch(tmp_path / "classes/run/.a.mp4")
    touch(tmp_path / "classes/run/.b.123.tmp.mp4")
    touch(tmp_path / "classes/run/c.mp4")
    records, _ = scan_video_folder(tmp_path / "classes")
    assert [r.path.name for r in records] == ["c.mp4"]
