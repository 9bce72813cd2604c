"""``sifa extract-features``: features against the model's feature maps pooled by hand, the
files, the index, resumption, unreadable videos, and 2 gloo processes writing what one writes."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sifa.cli import main
from sifa.data.decoding import VideoError, open_video
from sifa.data.presets import eval_transform
from sifa.data.sampling import DenseSampler
from sifa.engine.checkpoint import load_model, resolve_checkpoint
from sifa.engine.features import FeatureExtractor, pool_features
from sifa.engine.resources import using_threads
from sifa.models import create_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
POOLINGS = ("avg", "max", "keep")


def pooled_by_hand(maps: torch.Tensor, spatial: str, temporal: str, per: str) -> torch.Tensor:
    """The pooling rule, spelt out: ``(V, C, T, H, W)``, H and W, then T, then the views."""
    x = maps
    if spatial == "avg":
        x = x.flatten(3).sum(-1) / (maps.shape[3] * maps.shape[4])
    elif spatial == "max":
        x = x.flatten(3).max(-1).values
    if temporal == "avg":
        x = x.sum(2) / maps.shape[2]
    elif temporal == "max":
        x = x.max(2).values
    return x.sum(0) / maps.shape[0] if per == "video" else x


@pytest.mark.parametrize(
    "spatial, temporal, per", list(itertools.product(POOLINGS, POOLINGS, ("clip", "video")))
)
def test_the_shape_rule(spatial, temporal, per):
    maps = torch.randn(6, 5, 4, 3, 2, generator=torch.Generator().manual_seed(0))
    pooled = pool_features(maps, spatial=spatial, temporal=temporal, per=per)
    shape = [6] * (per == "clip") + [5] + [4] * (temporal == "keep") + [3, 2] * (spatial == "keep")
    assert list(pooled.shape) == shape
    torch.testing.assert_close(pooled, pooled_by_hand(maps, spatial, temporal, per))


def views_by_hand(video: Path, clip_len: int, clips: int, crops: int, size: int) -> torch.Tensor:
    """The test views of ``video``: ``clips`` evenly spread clips of ``clip_len`` frames, each
    short side resized to ``size`` and cropped ``crops`` times: ``(clips * crops, 3, T, H, W)``."""
    with open_video(video) as reader:
        indices = DenseSampler(clip_len, num_clips=clips, random_start=False)(
            reader.info.num_frames
        )
        frames = reader.read(indices.reshape(-1)).view(*indices.shape, size, size, 3)
    transform = eval_transform(short_side=size, crop_size=size, crops=crops)
    views = [transform(clip) for clip in frames]
    return torch.cat([v if v.dim() == 5 else v.unsqueeze(0) for v in views])


def val_videos(tiny_data: Path) -> list[Path]:
    return [tiny_data / line.split()[0] for line in (tiny_data / "val.txt").read_text().split("\n")
            if line.strip()]  # fmt: skip


@pytest.mark.parametrize(
    "spatial, temporal, per",
    [("avg", "avg", "video"), ("max", "keep", "clip"), ("keep", "max", "video"),
     ("keep", "keep", "clip")],
)  # fmt: skip
def test_sifa_net_features_are_its_two_res5_maps_pooled(trained_run, tiny_data, spatial,
                                                        temporal, per):  # fmt: skip
    extractor = FeatureExtractor(trained_run, spatial=spatial, temporal=temporal, per=per,
                                 device="cpu")  # fmt: skip
    video = val_videos(tiny_data)[0]
    features = extractor.extract(video)

    model, _, _ = load_model(resolve_checkpoint(trained_run))
    views = views_by_hand(video, clip_len=8, clips=2, crops=1, size=32)  # the run's test views
    with torch.no_grad():
        main_maps, dual_maps = model.forward_features(views)
    assert set(features) == {"main", "dual"}
    for head, maps in (("main", main_maps), ("dual", dual_maps)):
        expected = pooled_by_hand(maps, spatial, temporal, per)
        torch.testing.assert_close(features[head], expected, rtol=1e-5, atol=1e-5)
    # With the defaults the main head's vector is what the classifier reads.
    if (spatial, temporal, per) == ("avg", "avg", "video"):
        with torch.no_grad():
            logits = model.fc(features["main"])
            per_view = model.fc(main_maps.mean(dim=(2, 3, 4)))
        torch.testing.assert_close(logits, per_view.mean(0), rtol=1e-5, atol=1e-5)


def test_swin_features_are_channels_first_maps_of_the_last_stage(tiny_data):
    extractor = FeatureExtractor(model="swin_t", frames=8, size=32, clips=2, crops=1,
                                 spatial="keep", temporal="keep", per="clip", seed=3,
                                 device="cpu")  # fmt: skip
    video = val_videos(tiny_data)[1]
    features = extractor.extract(video)

    with torch.random.fork_rng():
        torch.manual_seed(3)  # random weights: the seed's
        model = create_model("swin_t").eval()
    views = views_by_hand(video, clip_len=8, clips=2, crops=1, size=32)
    with torch.no_grad():
        tokens = model.forward_features(views)  # (V, T', H', W', C)
    assert set(features) == {"features"}
    assert features["features"].shape == (2, 768, 2, 1, 1)
    torch.testing.assert_close(features["features"], tokens.permute(0, 4, 1, 2, 3))


def source_folder(tiny_data: Path, folder: Path, count: int = 3) -> Path:
    """``count`` tiny videos in class sub-folders, an empty file and a truncated mp4."""
    for video in val_videos(tiny_data)[:count]:
        target = folder / video.parent.name / video.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, target)
    (folder / "bad").mkdir()
    (folder / "bad" / "empty.mp4").write_bytes(b"")
    whole = val_videos(tiny_data)[-1].read_bytes()
    (folder / "bad" / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    return folder


def read_features(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (not a dict)
        return tensors, handle.metadata()


def test_files_index_unreadable_videos_and_resumption(trained_run, tiny_data, tmp_path, capsys):
    source = source_folder(tiny_data, tmp_path / "videos")
    out = tmp_path / "features"
    args = ["extract-features", str(source), str(out), "--checkpoint", str(trained_run),
            "--per", "clip", "--quiet"]  # fmt: skip

    assert main(args) == 1  # two unreadable videos
    captured = capsys.readouterr()
    assert "3 written, 0 already there, 2 unreadable" in captured.out
    assert f"unreadable: {source / 'bad' / 'empty.mp4'}: the file is empty" in captured.err
    assert f"unreadable: {source / 'bad' / 'truncated.mp4'}" in captured.err

    index = json.loads((out / "index.json").read_text())
    good = sorted(p for p in source.rglob("*.mp4") if p.parent.name != "bad")
    assert [v["video"] for v in index["videos"]] == [str(p) for p in good]
    assert [u["video"] for u in index["unreadable"]] == [
        str(source / "bad" / "empty.mp4"), str(source / "bad" / "truncated.mp4")
    ]  # fmt: skip
    assert index["unreadable"][0]["reason"] == "the file is empty"
    assert not index["complete"] and index["settings"]["heads"] == ["main", "dual"]
    assert not (out / "bad").exists()  # nothing stands in for an unreadable video
    extractor = FeatureExtractor(trained_run, per="clip", device="cpu")
    for entry, video in zip(index["videos"], good, strict=True):
        relative = video.relative_to(source).with_suffix(".safetensors")
        assert entry["files"] == {"main": str(relative), "dual": str(relative)}
        tensors, metadata = read_features(out / relative)
        expected = extractor.extract(video)
        assert entry["shapes"] == {"main": [2, 64], "dual": [2, 64]}  # 2 clips, width 8 x 8
        for head in ("main", "dual"):
            torch.testing.assert_close(tensors[head], expected[head], rtol=1e-5, atol=1e-5)
        assert metadata["video"] == str(video) and metadata["per"] == "clip"
        assert metadata["checkpoint"] == str(resolve_checkpoint(trained_run))
        assert json.loads(metadata["frame_indices"]) == [list(range(8))] * 2  # 8-frame videos

    first = out / good[0].relative_to(source).with_suffix(".safetensors")
    written_at = first.stat().st_mtime_ns
    second = out / good[1].relative_to(source).with_suffix(".safetensors")
    second.unlink()
    assert main(args) == 1
    assert "1 written, 2 already there, 2 unreadable" in capsys.readouterr().out
    assert first.stat().st_mtime_ns == written_at and second.is_file()
    assert json.loads((out / "index.json").read_text()) == index

    # Other settings are not mixed into the folder.
    assert main([*args[:-3], "--per", "video"]) == 2
    err = capsys.readouterr().err
    assert f"{out} holds features of other settings (per: 'clip' -> 'video')" in err


def test_npy_files_and_a_single_video(trained_run, tiny_data, tmp_path, capsys):
    video = val_videos(tiny_data)[2]
    out = tmp_path / "npy"
    args = ["extract-features", str(video), str(out), "--checkpoint", str(trained_run),
            "--file-format", "npy", "--clips", "1", "--temporal", "keep", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "1 videos: 1 written" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    stem = video.stem
    assert index["videos"][0]["files"] == {"main": f"{stem}.main.npy", "dual": f"{stem}.dual.npy"}
    features = FeatureExtractor(trained_run, clips=1, temporal="keep", device="cpu").extract(video)
    for head in ("main", "dual"):
        array = np.load(out / f"{stem}.{head}.npy")
        assert list(array.shape) == index["videos"][0]["shapes"][head]
        np.testing.assert_allclose(array, features[head].numpy(), rtol=1e-5, atol=1e-5)
    assert features["dual"].shape[-1] * 2 == features["main"].shape[-1]  # dual: time pooled by 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--model", "sifa_resnet18", "depth=3"], "sifa_resnet18 has no switch 'depth'"),
        (["--checkpoint", "RUN", "base_width=8"], "model switches (base_width=8) go with --model"),
        (["--checkpoint", "RUN", "--pretrained", "x.pth"], "--pretrained go with --model"),
        (["--checkpoint", "RUN", "--clips", "0"], "clips must be a positive integer, got 0"),
        (["--checkpoint", "RUN", "--batch-size", "0"], "batch_size must be a positive integer"),
    ],
)
def test_bad_options_are_named(trained_run, tiny_data, tmp_path, capsys, extra, message):
    extra = [str(trained_run) if a == "RUN" else a for a in extra]
    video = val_videos(tiny_data)[0]
    assert main(["extract-features", str(video), str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sifa extract-features: error: ") and message in err, err


def test_a_missing_source_or_a_folder_without_videos_is_named(tmp_path, capsys):
    def extract(source: Path) -> int:
        return main(
            ["extract-features", str(source), str(tmp_path / "o"), "--model", "c2d_resnet18"]
        )

    missing = tmp_path / "missing.mp4"
    assert extract(missing) == 2
    assert f"not found: {missing}" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert extract(tmp_path / "empty") == 2
    assert f"no videos (.mp4, .avi, .mkv, .webm, .mov, .m4v) found under {tmp_path / 'empty'}" in (
        capsys.readouterr().err
    )


def test_an_unreadable_video_raises_from_the_python_api(trained_run, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    extractor = FeatureExtractor(trained_run, device="cpu")
    with pytest.raises(VideoError, match="empty"):
        extractor.extract(tmp_path / "empty.mp4")


def test_two_gloo_processes_write_what_one_process_writes(trained_run, tiny_data, tmp_path,
                                                          capsys):  # fmt: skip
    """Each video on exactly one of the 2 processes (5 readable videos: 3 on rank 0, 2 on rank
    1), the unreadable ones listed by both runs, and the same files, bit for bit (one thread
    and one video per forward pass in both runs). The one-process run, the reference, runs in
    this process; the two processes under ``torchrun``."""
    source = source_folder(tiny_data, tmp_path / "videos", count=5)
    options = [str(source), "--checkpoint", str(trained_run), "--per", "clip", "--quiet"]
    runs = {name: tmp_path / name for name in ("one", "two")}
    with using_threads(1):
        code = main(["extract-features", options[0], str(runs["one"]), *options[1:]])
    one_run = subprocess.CompletedProcess([], code, *capsys.readouterr())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "sifa", "extract-features", options[0],
               str(runs["two"]), *options[1:]]  # fmt: skip
    two_run = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    for result in (one_run, two_run):
        assert result.returncode == 1, result.stderr[-3000:]  # the two unreadable videos
        assert result.stdout.count("5 written, 0 already there, 2 unreadable") == 1, result.stdout
        assert result.stderr.count("unreadable: ") == 2, result.stderr[-3000:]
    one_index = json.loads((runs["one"] / "index.json").read_text())
    assert json.loads((runs["two"] / "index.json").read_text()) == one_index
    files = sorted(p.relative_to(runs["one"]) for p in runs["one"].rglob("*.safetensors"))
    assert files == sorted(p.relative_to(runs["two"]) for p in runs["two"].rglob("*.safetensors"))
    assert len(files) == 5
    for name in files:
        one, one_metadata = read_features(runs["one"] / name)
        two, two_metadata = read_features(runs["two"] / name)
        assert one_metadata == two_metadata
        assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
