"""The synthetic order-only task: halves swapped between partner classes, motion read back from
the pixels, determinism, and the dataset writer (decoded back with PyAV)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sifa.data import synthetic
from sifa.data.annotations import read_class_names, read_video_list
from sifa.data.synthetic import (
    PAIRS,
    PHASES,
    WINDOW,
    SyntheticConfig,
    class_names,
    class_phases,
    dataset_is_complete,
    make_synthetic_dataset,
    phase_boundaries,
    render_clip,
    render_clip_layers,
    write_video,
)

TINY = SyntheticConfig(
    videos_per_class=2, val_videos_per_class=1, size=32, frames=8, fps=8, num_pairs=1
)


def swap_halves(clip: np.ndarray) -> np.ndarray:
    half = len(clip) // 2
    return np.concatenate([clip[half:], clip[:half]])


def test_class_names_pair_phases_in_both_orders():
    assert class_names() == [
        "right_then_up",
        "up_then_right",
        "left_then_down",
        "down_then_left",
        "clockwise_then_zoom_in",
        "zoom_in_then_clockwise",
        "counterclockwise_then_zoom_out",
        "zoom_out_then_counterclockwise",
    ]
    assert class_names(1) == ["right_then_up", "up_then_right"]
    assert sorted(phase for pair in PAIRS for phase in pair) == sorted(PHASES)
    assert class_phases(5) == ("zoom_in", "clockwise")
    for bad in (0, 5):
        with pytest.raises(ValueError, match="num_pairs"):
            class_names(bad)
    with pytest.raises(ValueError, match="label"):
        render_clip(2, 0, num_pairs=1)


@pytest.mark.parametrize("frames", [8, 16, 32])
def test_phase_boundaries_fall_on_windows(frames):
    starts = phase_boundaries(frames)
    assert starts == [0, frames // 2]
    ends = [*starts[1:], frames]
    for start, end in zip(starts, ends, strict=True):
        assert start % WINDOW == 0 and (end - start) % WINDOW == 0 and end > start


@pytest.mark.parametrize("frames", [0, -8, 4, 12, 20, 30])
def test_frames_must_be_a_multiple_of_eight(frames):
    with pytest.raises(ValueError, match="frames"):
        phase_boundaries(frames)
    with pytest.raises(ValueError, match="frames"):
        render_clip(0, 0, frames=frames)
    with pytest.raises(ValueError, match="frames"):
        SyntheticConfig(frames=frames)


@pytest.mark.parametrize(("size", "frames"), [(64, 16), (32, 8), (48, 32)])
def test_partner_class_is_the_clip_with_halves_swapped(size, frames):
    for pair in range(len(PAIRS)):
        for index in (0, 7):
            first = render_clip(2 * pair, index, size=size, frames=frames, seed=3)
            second = render_clip(2 * pair + 1, index, size=size, frames=frames, seed=3)
            assert first.shape == (frames, size, size, 3) and first.dtype == np.uint8
            assert np.array_equal(second, swap_halves(first))
            assert not np.array_equal(first, second)


def test_windows_are_the_same_multiset_in_a_different_order():
    for pair in range(len(PAIRS)):
        clips = [render_clip(2 * pair + order, 4, seed=1) for order in (0, 1)]
        windows = [
            [clip[start : start + WINDOW].tobytes() for start in range(0, len(clip), WINDOW)]
            for clip in clips
        ]
        assert sorted(windows[0]) == sorted(windows[1])
        assert windows[0] != windows[1]
        frames = [sorted(frame.tobytes() for frame in clip) for clip in clips]
        assert frames[0] == frames[1]


def digest(clip: np.ndarray) -> str:
    return hashlib.sha256(clip.tobytes()).hexdigest()


def test_rendering_is_deterministic_and_ignores_global_random_state():
    np.random.seed(1)
    torch.manual_seed(1)
    reference = render_clip(3, 5, seed=2)
    np.random.seed(2)
    torch.manual_seed(2)
    assert np.array_equal(render_clip(3, 5, seed=2), reference)
    assert not np.array_equal(render_clip(3, 5, seed=3), reference)
    assert not np.array_equal(render_clip(3, 6, seed=2), reference)
    # each pair has its own draws: another pair's video 5 has another background
    backgrounds = {render_clip_layers(label, 5, seed=2).background.tobytes() for label in (1, 3, 5)}
    assert len(backgrounds) == 3
    code = (
        "import hashlib; from sifa.data.synthetic import render_clip; "
        "print(hashlib.sha256(render_clip(3, 5, seed=2).tobytes()).hexdigest())"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert fresh == digest(reference)


# ------------------------------------------------------------------ the motion, read from pixels


def warp(image: np.ndarray, inverses: np.ndarray, box: tuple[int, ...]) -> torch.Tensor:
    """Bilinear affine warps of a float ``(H, W, C)`` image, one per 2x3 matrix in ``inverses``
    ``(N, 2, 3)``, evaluated on ``box`` = (left, top, right, bottom): output pixel ``p`` (at
    its centre, ``+0.5``) takes the input at ``inverse @ [p, 1]``, zero outside.
    Returns ``(N, h, w, C)``."""
    left, top, right, bottom = box
    ys, xs = np.mgrid[top:bottom, left:right] + 0.5
    points = np.stack([xs, ys, np.ones_like(xs)], -1)
    source = points[None] @ inverses.transpose(0, 2, 1)[:, None]
    height, width = image.shape[:2]
    grid = source / np.array([width, height]) * 2 - 1
    batch = (
        torch.from_numpy(image.transpose(2, 0, 1)).float()[None].expand(len(inverses), -1, -1, -1)
    )
    moved = F.grid_sample(batch, torch.from_numpy(grid).float(), align_corners=False)
    return moved.permute(0, 2, 3, 1)


def about(centre: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """The inverse map ``q = centre + linear @ (p - centre)`` as a 2x3 matrix."""
    return np.hstack([linear, (centre - linear @ centre)[:, None]])


def candidate_motions(centre: np.ndarray, size: int) -> list[tuple[str, float, np.ndarray]]:
    """``(phase, amount per frame, inverse map)`` for every motion the pixels are tested on:
    translations (pixels), rotations about ``centre`` (degrees, clockwise on screen with y
    down), zooms about ``centre`` (factor), and standing still."""
    unit = size / 64
    candidates = [("still", 0.0, about(centre, np.eye(2)))]
    directions = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}
    for phase, (dx, dy) in directions.items():
        for speed in np.arange(0.5, 4.01, 0.25):
            shift = np.array([dx, dy]) * speed * unit
            candidates.append((phase, speed, np.hstack([np.eye(2), -shift[:, None]])))
    for degrees in np.arange(2.0, 16.01, 0.5):
        for phase, sign in (("clockwise", 1), ("counterclockwise", -1)):
            turn = math.radians(sign * degrees)
            undo = np.array([[math.cos(turn), math.sin(turn)], [-math.sin(turn), math.cos(turn)]])
            candidates.append((phase, degrees, about(centre, undo)))
    for factor in np.arange(1.02, 1.1801, 0.005):
        candidates.append(("zoom_in", factor, about(centre, np.eye(2) / factor)))
        candidates.append(("zoom_out", factor, about(centre, np.eye(2) * factor)))
    return candidates


def best_motion(layers, t: int) -> tuple[str, float]:
    """The candidate motion whose prediction of frame ``t + 1`` (the object of frame ``t``,
    moved, over the background) is closest to it, around the object in both frames."""
    background = layers.background.astype(np.float32)
    alpha = layers.object_alpha[t]
    # the object's own colour, premultiplied by its coverage (no distractor shows through it)
    premultiplied = layers.frames[t].astype(np.float32) - background * (1 - alpha[..., None])
    region = (alpha > 0) | (layers.object_alpha[t + 1] > 0)
    region &= (layers.distractor_alpha[t + 1] == 0) | (layers.object_alpha[t + 1] == 1)
    rows, cols = np.nonzero(region)
    box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    crop = (slice(box[1], box[3]), slice(box[0], box[2]))
    candidates = candidate_motions(layers.geometry.centre[t], len(alpha))
    inverses = np.stack([inverse for _, _, inverse in candidates])
    moved = warp(np.concatenate([alpha[..., None], premultiplied], -1), inverses, box).numpy()
    predicted = background[crop] * (1 - moved[..., :1]) + moved[..., 1:]
    target = layers.frames[t + 1][crop].astype(np.float32)
    errors = np.abs(predicted - target)[:, region[crop]].mean((1, 2))
    phase, amount, _ = candidates[int(errors.argmin())]
    return phase, amount


# how far a pixel estimate may be off: the candidate grid's spacing and interpolation blur
TOLERANCE = {"translation": 0.25, "rotation": 1.5, "zoom": 0.02}
# the stated speeds per frame (translation in pixels at 64 px), for phases of up to 8 frames
RANGES = {"translation": (1.5, 3.0), "rotation": (6.0, 12.0), "zoom": (1.06, 1.12)}


def kind_of(phase: str) -> str:
    if phase in ("right", "left", "up", "down"):
        return "translation"
    return "zoom" if phase.startswith("zoom") else "rotation"


def geometry_step(layers, t: int, kind: str) -> float:
    """How far the exposed geometry says the object moves from frame ``t`` to ``t + 1``, in
    the units of :func:`candidate_motions`."""
    geometry = layers.geometry
    if kind == "translation":
        step = np.linalg.norm(geometry.centre[t + 1] - geometry.centre[t])
        return step * 64 / layers.frames.shape[1]
    if kind == "rotation":
        return abs(geometry.angle[t + 1] - geometry.angle[t])
    ratio = geometry.side[t + 1] / geometry.side[t]
    return max(ratio, 1 / ratio)


def checked_steps(frames: int) -> list[int]:
    """First, middle and last step of each phase (not the step across the boundary, where two
    independent draws meet)."""
    half = frames // 2
    return sorted({start + step for start in (0, half) for step in (0, half // 2 - 1, half - 2)})


@pytest.mark.parametrize(
    ("size", "frames", "indices", "amounts"), [(64, 16, (0, 1), True), (32, 8, (2, 3), False)]
)
def test_pixels_move_as_the_class_name_says(size, frames, indices, amounts):
    """Direction from the pixels at any size; speeds too at 64 px, where a 16 px object
    resolves them (an 8 px one gives rotations to a few degrees only)."""
    for label, name in enumerate(class_names()):
        first, second = name.split("_then_")
        for index in indices:
            layers = render_clip_layers(label, index, size=size, frames=frames)
            for t in checked_steps(frames):
                phase, amount = best_motion(layers, t)
                where = (name, index, t, phase, amount)
                assert phase == (first if t < frames // 2 else second), where
                if not amounts:
                    continue
                kind = kind_of(phase)
                low, high = RANGES[kind]
                slack = TOLERANCE[kind]
                assert low - slack <= amount <= high + slack, where
                assert abs(amount - geometry_step(layers, t, kind)) <= slack, where


def test_long_clips_keep_the_motion_direction():
    for label in (0, 3, 4, 7):
        layers = render_clip_layers(label, 0, size=64, frames=32)
        phases = class_phases(label)
        for t in checked_steps(32):
            assert best_motion(layers, t)[0] == phases[t // 16], (label, t)


def test_speeds_cover_the_stated_ranges():
    """Per-frame steps of the geometry (tied to the pixels above) over many draws: inside the
    stated ranges, and spread over them; translation in pixels per frame at 64 px."""
    steps = {"translation": [], "rotation": [], "zoom": []}
    for pair in range(len(PAIRS)):
        for index in range(25):
            layers = render_clip_layers(2 * pair, index)
            for start in (0, 8):
                kind = kind_of(layers.phases[start])
                moves = [geometry_step(layers, t, kind) for t in range(start, start + 7)]
                np.testing.assert_allclose(moves, moves[0], rtol=1e-9)
                steps[kind].append(moves[0])
    for kind, values in steps.items():
        low, high = RANGES[kind]
        assert low <= min(values) < low + 0.2 * (high - low), kind
        assert high - 0.2 * (high - low) < max(values) <= high, kind


def test_layers_agree_with_the_frames_and_the_geometry():
    for label in range(8):
        layers = render_clip_layers(label, 3)
        free = (layers.object_alpha == 0) & (layers.distractor_alpha == 0)
        background = np.broadcast_to(layers.background, layers.frames.shape)
        assert np.array_equal(layers.frames[free], background[free])
        covered = layers.object_alpha == 1
        changed = np.abs(layers.frames.astype(int) - background).sum(-1) > 0
        assert changed[covered].mean() > 0.9
        assert (layers.distractor_alpha.reshape(16, -1).max(1) > 0.99).all()
        ys, xs = np.mgrid[0:64, 0:64] + 0.5
        area = layers.object_alpha.sum((1, 2))
        centroid = (
            np.stack(
                [(layers.object_alpha * xs).sum((1, 2)), (layers.object_alpha * ys).sum((1, 2))], 1
            )
            / area[:, None]
        )
        np.testing.assert_allclose(centroid, layers.geometry.centre, atol=0.1)
        np.testing.assert_allclose(area, layers.geometry.side**2, rtol=0.02)
        assert layers.phases == (class_phases(label)[0],) * 8 + (class_phases(label)[1],) * 8


def test_zoom_changes_the_object_area_geometrically():
    for label in (4, 5, 6, 7):
        layers = render_clip_layers(label, 1)
        area = layers.object_alpha.sum((1, 2))
        for start in (0, 8):
            phase = layers.phases[start]
            ratios = area[start + 1 : start + 8] / area[start : start + 7]
            if phase == "zoom_in":
                assert ((ratios > 1.06**2 * 0.98) & (ratios < 1.12**2 * 1.02)).all()
            elif phase == "zoom_out":
                assert ((1 / ratios > 1.06**2 * 0.98) & (1 / ratios < 1.12**2 * 1.02)).all()
            else:
                np.testing.assert_allclose(ratios, 1.0, rtol=0.01)


@pytest.mark.parametrize(("size", "frames"), [(64, 16), (32, 8), (64, 32)])
def test_object_stays_inside_and_every_frame_moves(size, frames):
    quarter = size / 4
    for pair in range(len(PAIRS)):
        for index in range(6):
            layers = render_clip_layers(2 * pair, index, size=size, frames=frames)
            alpha = layers.object_alpha
            rim = np.concatenate([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], 1)
            assert rim.max() == 0.0
            # an object cut by the frame edge would cover less than its side squared
            np.testing.assert_allclose(alpha.sum((1, 2)), layers.geometry.side**2, rtol=0.03)
            assert (
                (layers.geometry.side > 0.5 * quarter) & (layers.geometry.side < 3 * quarter)
            ).all()
            steps = np.abs(np.diff(layers.frames.astype(np.int16), axis=0))
            assert (steps.reshape(frames - 1, -1).max(1) > 30).all()


def test_background_is_a_photo_that_varies_between_videos():
    backgrounds = [render_clip_layers(0, index).background for index in range(4)]
    for background in backgrounds:
        assert background.std() > 5
        assert len(np.unique(background)) > 40
    assert len({b.tobytes() for b in backgrounds}) == 4


def test_missing_scikit_image_or_photo_is_named(monkeypatch):
    synthetic._photos.cache_clear()
    try:
        monkeypatch.setattr(synthetic.importlib.util, "find_spec", lambda name: None)
        with pytest.raises(ModuleNotFoundError, match="scikit-image"):
            render_clip(0, 0)
        monkeypatch.undo()
        monkeypatch.setattr(synthetic, "PHOTO_FILES", (*synthetic.PHOTO_FILES, "nope.png"))
        with pytest.raises(FileNotFoundError, match=r"nope\.png"):
            render_clip(0, 0)
    finally:
        monkeypatch.undo()
        synthetic._photos.cache_clear()


# ------------------------------------------------------------------ files


def decode(path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, float(stream.average_rate)


def test_write_video_round_trip_and_validation(tmp_path):
    clip = render_clip(6, 2, size=32, frames=8)
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"old")
    write_video(path, clip, 8)
    frames, fps = decode(path)
    assert frames.shape == clip.shape and fps == 8.0
    # lossy: CRF 18 and 4:2:0 chroma on small textured frames
    assert np.abs(frames.astype(int) - clip).mean() < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", clip[:, :31], 8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", clip.astype(np.float32), 8)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "still.mp4", clip, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_write_video_gives_the_same_bytes_every_time(tmp_path):
    # The demo's numbers rest on it: x264's threads and swscale's padding once made the files
    # (and so the training) differ from run to run.
    clip = render_clip(3, 5, size=64, frames=8)
    digests = set()
    for attempt in range(40):
        write_video(tmp_path / f"{attempt}.mp4", clip, 8)
        digests.add(hashlib.sha256((tmp_path / f"{attempt}.mp4").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_make_synthetic_dataset_writes_a_readable_video_list(tmp_path):
    summary = make_synthetic_dataset(tmp_path, TINY, progress=False)
    assert summary["generated"] and summary["num_train"] == 4 and summary["num_val"] == 2
    assert read_class_names(tmp_path / "classes.txt") == ["right_then_up", "up_then_right"]
    train = (tmp_path / "train.txt").read_text().splitlines()
    assert train == sorted(train)
    assert set(train) == {
        "videos/right_then_up/right_then_up_0000.mp4 0",
        "videos/right_then_up/right_then_up_0001.mp4 0",
        "videos/up_then_right/up_then_right_0000.mp4 1",
        "videos/up_then_right/up_then_right_0001.mp4 1",
    }
    assert set((tmp_path / "val.txt").read_text().splitlines()) == {
        "videos/right_then_up/right_then_up_0002.mp4 0",
        "videos/up_then_right/up_then_right_0002.mp4 1",
    }
    manifest = json.loads((tmp_path / "synthetic.json").read_text())
    assert manifest["config"] == {
        "videos_per_class": 2,
        "val_videos_per_class": 1,
        "size": 32,
        "frames": 8,
        "fps": 8,
        "num_pairs": 1,
        "seed": 0,
    }
    records = read_video_list(tmp_path / "train.txt", tmp_path) + read_video_list(
        tmp_path / "val.txt", tmp_path
    )
    for record in records:
        frames, fps = decode(record.path)
        assert frames.shape == (8, 32, 32, 3) and fps == 8.0
        index = int(record.path.stem[-4:])
        errors = [
            np.abs(frames.astype(int) - render_clip(label, index, size=32, frames=8)).mean()
            for label in (0, 1)
        ]
        assert errors[record.label] < 5 and errors[1 - record.label] > 2 * errors[record.label]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_dataset_is_complete_tracks_config_and_files(tmp_path):
    assert not dataset_is_complete(tmp_path, TINY)
    make_synthetic_dataset(tmp_path, TINY, progress=False)
    assert dataset_is_complete(tmp_path, TINY)
    other = dataclasses.replace(TINY, seed=1)
    assert not dataset_is_complete(tmp_path, other)
    assert not dataset_is_complete(tmp_path, dataclasses.replace(TINY, fps=10))
    video = tmp_path / "videos/up_then_right/up_then_right_0002.mp4"
    stamp = video.stat().st_mtime_ns
    assert not make_synthetic_dataset(tmp_path, TINY, progress=False)["generated"]
    assert video.stat().st_mtime_ns == stamp
    video.unlink()
    assert not dataset_is_complete(tmp_path, TINY)
    assert make_synthetic_dataset(tmp_path, TINY, progress=False)["generated"]
    assert dataset_is_complete(tmp_path, TINY)
    (tmp_path / "val.txt").unlink()
    assert not dataset_is_complete(tmp_path, TINY)


def test_interrupted_generation_leaves_an_incomplete_folder(tmp_path, monkeypatch):
    make_synthetic_dataset(tmp_path, TINY, progress=False)
    other = dataclasses.replace(TINY, seed=5)
    written = []

    def failing_write(path, frames, fps):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)

    monkeypatch.setattr(synthetic, "write_video", failing_write)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_dataset(tmp_path, other, progress=False)
    assert not (tmp_path / "synthetic.json").exists()
    assert not dataset_is_complete(tmp_path, TINY)
    assert not dataset_is_complete(tmp_path, other)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("videos_per_class", 0),
        ("val_videos_per_class", -1),
        ("size", 30.0),
        ("size", 33),
        ("size", 8),
        ("frames", 12),
        ("fps", 0),
        ("num_pairs", 5),
        ("num_pairs", 0),
        ("seed", -1),
        ("seed", True),
        ("fps", "8"),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        SyntheticConfig(**{field: value})
