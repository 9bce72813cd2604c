"""Frame indices of the samplers, checked exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sifa.data.sampling import DenseSampler, SegmentSampler


def test_dense_test_clip_is_centred():
    # 100 frames, 16 frames 2 apart: span 31, starts 0..69, centre of 70 starts is 35.
    indices = DenseSampler(16, 2)(100)
    assert indices.tolist() == [list(range(35, 35 + 32, 2))]


def test_dense_multi_clip_starts_are_centres_of_equal_parts():
    # 50 frames, 8 consecutive frames: starts 0..42 (43 values) in 3 parts -> 7, 21, 35.
    indices = DenseSampler(8, 1, num_clips=3)(50)
    assert indices[:, 0].tolist() == [7, 21, 35]
    assert (np.diff(indices, axis=1) == 1).all()


def test_dense_random_starts_cover_the_valid_range():
    sampler = DenseSampler(4, 3, random_start=True)  # span 10, 20 frames: starts 0..10
    gen = torch.Generator().manual_seed(0)
    starts = [int(sampler(20, gen)[0, 0]) for _ in range(500)]
    assert min(starts) == 0 and max(starts) == 10 and len(set(starts)) == 11
    clip = sampler(20, gen)[0]
    assert np.diff(clip).tolist() == [3, 3, 3]


def test_dense_random_start_is_reproducible():
    sampler = DenseSampler(8, 1, random_start=True)
    first = sampler(300, torch.Generator().manual_seed(5))
    again = sampler(300, torch.Generator().manual_seed(5))
    assert np.array_equal(first, again)


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("loop", [0, 2, 4, 1, 3, 0, 2, 4]),  # 5 frames, interval 2: 0 2 4 6 8 10 12 14 mod 5
        ("pad", [0, 2, 4, 4, 4, 4, 4, 4]),
    ],
)
def test_short_videos_loop_or_pad(policy, expected):
    indices = DenseSampler(8, 2, short_video=policy)(5)
    assert indices.tolist() == [expected]


def test_exactly_one_clip_long_video_starts_at_zero():
    assert DenseSampler(16, 1)(16).tolist() == [list(range(16))]


def test_segments_take_middles_in_testing_and_stay_inside_in_training():
    # 80 frames in 8 segments of 10: middles 5, 15, ..., 75.
    assert SegmentSampler(8)(80).tolist() == [list(range(5, 80, 10))]
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        indices = SegmentSampler(8, random_offset=True)(80, gen)[0]
        assert ((indices >= np.arange(0, 80, 10)) & (indices < np.arange(10, 90, 10))).all()


def test_segments_of_a_short_video_repeat_frames_in_order():
    assert SegmentSampler(8)(3).tolist() == [[0, 0, 0, 1, 1, 2, 2, 2]]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: DenseSampler(0), r"clip_len must be a positive integer, got 0"),
        (lambda: DenseSampler(8, frame_interval=0), r"frame_interval must be a positive"),
        (lambda: DenseSampler(8, num_clips=2.0), r"num_clips must be a positive integer"),
        (lambda: DenseSampler(8, short_video="wrap"), r"short_video must be one of"),
        (lambda: SegmentSampler(0), r"num_segments must be a positive integer"),
        (lambda: DenseSampler(8)(0), r"num_frames must be a positive integer, got 0"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_segment_test_clips_take_evenly_spaced_positions_in_each_segment():
    # 80 frames, 4 segments of 20: 2 clips at fractions 1/4 and 3/4 -> frames 5 and 15 of each.
    indices = SegmentSampler(4, num_clips=2)(80)
    assert indices.tolist() == [[5, 25, 45, 65], [15, 35, 55, 75]]
    assert np.array_equal(SegmentSampler(4, num_clips=1)(80), SegmentSampler(4)(80))


def test_segment_random_offset_takes_one_clip():
    with pytest.raises(ValueError, match="num_clips"):
        SegmentSampler(4, num_clips=2, random_offset=True)
