"""The clip dataset: decoding only sampled frames, multi-view, seeding, and bad files."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from sifa.data.annotations import DatasetSpec, VideoRecord
from sifa.data.datasets import UnreadableVideo, VideoClipDataset
from sifa.data.decoding import VideoError, VideoNotFoundError
from sifa.data.loader import make_loader, set_epoch
from sifa.data.sampling import DenseSampler

from video_fixtures import frame_indices_of, indexed_frames, write_mp4


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Five 30-frame videos whose frames tell their index, labelled 0..4."""
    folder = tmp_path_factory.mktemp("videos")
    return [
        VideoRecord(write_mp4(folder / f"v{i}.mp4", indexed_frames(30, 32, 32)), i)
        for i in range(5)
    ]


def test_items_are_sampled_clips_with_labels(videos):
    dataset = VideoClipDataset(videos, list("abcde"), sampler=DenseSampler(4, 3, random_start=True))
    assert len(dataset) == 5 and dataset.num_classes == 5
    for index in range(5):
        clip, label = dataset[index]
        assert clip.dtype == torch.uint8 and clip.shape == (4, 32, 32, 3) and label == index
        frames = frame_indices_of(clip)
        assert np.diff(frames).tolist() == [3, 3, 3] and 0 <= frames[0] <= 30 - 10


def test_multi_view_stacks_clips_then_crops(videos):
    def two_crops(clip):  # (T, H, W, 3) uint8 -> (2, C, T, H, W): left and right halves
        cthw = clip.permute(3, 0, 1, 2).float()
        return torch.stack([cthw[..., :16], cthw[..., 16:]])

    dataset = VideoClipDataset(
        videos, list("abcde"), sampler=DenseSampler(4, 1, num_clips=3), transform=two_crops,
        multi_view=True,
    )  # fmt: skip
    views, label = dataset[2]
    assert views.shape == (6, 3, 4, 32, 16) and label == 2
    # 30 frames, 4-frame clips: starts 0..26 in 3 parts -> 4, 13, 22; crops inner.
    starts = [round((float(v[:, 0].mean()) - 10) / 6) for v in views]
    assert starts == [4, 4, 13, 13, 22, 22]
    single = VideoClipDataset(videos, list("abcde"), sampler=DenseSampler(4), multi_view=True)
    assert single[0][0].shape == (1, 4, 32, 32, 3)


def test_several_clips_need_multi_view(videos):
    dataset = VideoClipDataset(videos, list("abcde"), sampler=DenseSampler(4, num_clips=2))
    with pytest.raises(ValueError, match=r"the sampler gives 2 clips per video: use multi_view"):
        dataset[0]


def _epoch_batches(dataset, workers, epoch):
    loader = make_loader(dataset, batch_size=2, shuffle=True, seed=3, num_workers=workers)
    set_epoch(loader, epoch)
    return [(clips.clone(), labels.clone()) for clips, labels in loader]


def test_epochs_are_reproducible_whatever_the_workers(videos):
    def noisy(clip):  # random augmentation drawn from torch's RNG
        return clip.float() + torch.rand(())

    dataset = VideoClipDataset(
        videos, list("abcde"), sampler=DenseSampler(4, 2, random_start=True), transform=noisy
    )
    serial = _epoch_batches(dataset, 0, epoch=1)
    parallel = _epoch_batches(dataset, 2, epoch=1)
    for (a, la), (b, lb) in zip(serial, parallel, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    other = _epoch_batches(dataset, 0, epoch=2)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(serial, other, strict=True))


def _with_bad_files(videos, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 50)
    bad = [
        VideoRecord(tmp_path / "missing.mp4", 0),
        VideoRecord(tmp_path / "empty.mp4", 1),
        VideoRecord(tmp_path / "junk.mp4", 2),
    ]
    # Interleaved: good, bad, good, bad, ... so every bad item has a good successor.
    return [videos[0], bad[0], videos[1], bad[1], videos[2], bad[2], videos[3]]


def test_raise_mode_names_the_file(videos, tmp_path):
    dataset = VideoClipDataset(_with_bad_files(videos, tmp_path), list("abcde"))
    with pytest.raises(VideoNotFoundError, match=r"missing.mp4: no such file"):
        dataset[1]


def test_skip_mode_finishes_an_epoch_and_counts(videos, tmp_path):
    records = _with_bad_files(videos, tmp_path)
    dataset = VideoClipDataset(records, list("abcde"), on_error="skip")
    loader = make_loader(dataset, batch_size=3, shuffle=True, num_workers=2)
    for epoch in range(2):
        set_epoch(loader, epoch)
        labels = torch.cat([batch_labels for _, batch_labels in loader])
        assert len(labels) == len(records)
        assert dataset.skip_count == 3 * (epoch + 1)  # counted across the two workers
    assert sorted(dataset.skipped_files()) == sorted(
        str(tmp_path / n) for n in ("empty.mp4", "junk.mp4", "missing.mp4")
    )
    dataset.reset_skips()
    assert dataset.skip_count == 0


def test_skip_mode_logs_each_file_once(videos, tmp_path, caplog):
    dataset = VideoClipDataset(_with_bad_files(videos, tmp_path), list("abcde"), on_error="skip")
    with caplog.at_level(logging.WARNING, logger="sifa.data.datasets"):
        for _ in range(2):
            for index in range(len(dataset)):
                dataset[index]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert any("junk.mp4: not a readable video" in m for m in messages)
    assert dataset.skip_count == 6


def test_skip_mode_gives_up_after_max_substitutes(tmp_path):
    records = [VideoRecord(tmp_path / f"gone{i}.mp4", 0) for i in range(4)]
    dataset = VideoClipDataset(records, ["a"], on_error="skip", max_substitutes=2)
    with pytest.raises(VideoError, match=r"gone3.mp4: no such file; and the 2 videos after item 1"):
        dataset[1]


def test_evaluation_items_mark_unreadable_videos_instead_of_replacing_them(videos, tmp_path):
    records = _with_bad_files(videos, tmp_path)
    dataset = VideoClipDataset(records, list("abcde"), on_error="skip")
    items = [dataset.evaluation_item(index) for index in range(len(dataset))]
    marked = [item for item in items if isinstance(item, UnreadableVideo)]
    assert [(m.index, m.path) for m in marked] == [(i, str(records[i].path)) for i in (1, 3, 5)]
    assert [m.reason for m in marked[:2]] == ["no such file", "the file is empty"]
    assert marked[2].reason.startswith("not a readable video")
    for index in (0, 2, 4, 6):  # the readable videos are themselves, not a neighbour
        clip, label = items[index]
        assert label == records[index].label and torch.equal(clip, dataset[index][0])
    assert dataset.skip_count == 0  # nothing was replaced
    strict = VideoClipDataset(records, list("abcde"), on_error="raise")
    with pytest.raises(VideoNotFoundError, match=r"missing.mp4: no such file"):
        strict.evaluation_item(1)


def test_frame_list_dataset_from_spec(tmp_path):
    frames = indexed_frames(12, 16, 16)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp_path / name / f"frame{index:03d}.png")
    (tmp_path / "list.txt").write_text("a 12 0\nb 10 1\n")
    spec = DatasetSpec(
        "frame_list", str(tmp_path), str(tmp_path / "list.txt"),
        frame_template="frame{:03d}.png", frame_start_index=0,
    )  # fmt: skip
    dataset = VideoClipDataset.from_spec(spec, sampler=DenseSampler(12, 1))
    clip, label = dataset[1]
    assert label == 1 and frame_indices_of(clip) == [*range(10), 0, 1]  # 10 frames listed: loop


def test_bad_options(videos):
    with pytest.raises(
        ValueError, match=r"on_error must be one of \('raise', 'skip'\), got 'ignore'"
    ):
        VideoClipDataset(videos, ["a"], on_error="ignore")
    with pytest.raises(ValueError, match=r"at least one video"):
        VideoClipDataset([], ["a"])


def test_cached_videos_give_the_same_items_without_reading_again(videos, tmp_path):
    copies = []
    for record in videos:
        copy = tmp_path / record.path.name
        copy.write_bytes(record.path.read_bytes())
        copies.append(VideoRecord(copy, record.label))
    sampler = DenseSampler(4, 2, random_start=True)
    plain = VideoClipDataset(videos, list("abcde"), sampler=sampler)
    cached = VideoClipDataset(copies, list("abcde"), sampler=sampler, cache_videos=True)
    for epoch in range(2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(len(videos)):
            assert torch.equal(plain[index][0], cached[index][0])
        for record in copies:  # from now on only the cache can serve them
            record.path.unlink(missing_ok=True)
