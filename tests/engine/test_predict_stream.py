"""`sifa predict --out-video` and `sifa predict --stream`: annotated videos and live streams."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest
import torch

from sifa.cli import main
from sifa.data.encoding import H264Writer
from sifa.data.presets import eval_transform
from sifa.data.sampling import DenseSampler
from sifa.data.synthetic import render_clip, write_video
from sifa.engine.annotate import draw_predictions
from sifa.engine.checkpoint import load_model
from sifa.engine.predict import Predictor
from sifa.engine.stream import PredictionStream

FPS = 8


def decode(path, format=None) -> tuple[np.ndarray, float]:
    """All frames of ``path`` in order (uint8 ``(T, H, W, 3)``) and its frame rate."""
    with av.open(str(path), format=format) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return np.stack(frames), float(stream.average_rate or stream.guessed_rate)


def feed(fifo, data: bytes, seconds: float) -> None:
    """Write ``data`` into ``fifo`` in equal parts spread over ``seconds``: a video arriving
    at its own pace. Runs in a thread; a reader that stops early ends it."""
    parts = 3 * round(seconds * FPS)
    size = -(-len(data) // parts)
    started = time.perf_counter()
    try:
        with open(fifo, "wb", buffering=0) as pipe:
            for part in range(parts):
                time.sleep(max(0.0, started + part * seconds / parts - time.perf_counter()))
                pipe.write(data[part * size : (part + 1) * size])
    except BrokenPipeError:
        pass


def test_stream_from_a_fifo_predicts_every_stride_as_offline(trained_run, tmp_path, capsys):
    """A 3 s MPEG-TS video fed at real time through a FIFO: one JSON line per 0.5 s stride,
    each the model's prediction on the same 8 frames decoded offline. (--no-skip: on a busy
    machine the model may fall behind, and the default would then skip strides.)"""
    frames = np.concatenate([render_clip(label, 0, size=32, frames=8, num_pairs=2)
                             for label in (0, 1, 2)])  # fmt: skip
    ts = tmp_path / "clip.ts"
    with H264Writer(ts, rate=FPS, height=32, width=32, format="mpegts") as writer:
        for frame in frames:
            writer.write(frame)
    fifo = tmp_path / "live.ts"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=feed, args=(fifo, ts.read_bytes(), 3.0), daemon=True)
    feeder.start()
    out_video = tmp_path / "annotated.mp4"
    code = main(["predict", str(fifo), "--stream", "--checkpoint", str(trained_run),
                 "--stride-seconds", "0.5", "--input-format", "mpegts", "--topk", "4",
                 "--input-option", "analyzeduration=500000", "--no-skip",
                 "--out-video", str(out_video), "--device", "cpu"])  # fmt: skip
    feeder.join(timeout=10)
    assert code == 0
    captured = capsys.readouterr()
    predictions = [json.loads(line) for line in captured.out.splitlines()]
    # 24 frames, windows of clip_len = 8 frames every 4 frames: ends at 8, 12, ..., 24
    assert len(predictions) == (24 - 8) // 4 + 1
    assert [p["start_s"] for p in predictions] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [p["end_s"] for p in predictions] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert all(p["latency_s"] > 0 for p in predictions)
    assert "5 predictions, 0 skipped" in captured.err

    # Offline: the model by hand on the same frames, decoded from the same bytes.
    decoded, fps = decode(ts)
    assert len(decoded) == 24 and fps == FPS
    model, config, names = load_model(trained_run)
    data = config.data
    transform = eval_transform(short_side=data.test_short_side, crop_size=data.test_crop_size,
                               crops=data.test_crops, mean=tuple(data.mean),
                               std=tuple(data.std))  # fmt: skip
    sampler = DenseSampler(data.clip_len, data.frame_interval)
    for prediction in predictions:
        first = round(prediction["start_s"] * FPS)
        clip = torch.from_numpy(decoded[sampler(8)[0] + first])
        view = transform(clip)
        with torch.no_grad():
            probabilities = model(view if view.dim() == 5 else view[None]).softmax(-1).mean(0)
        scores = {t["label"]: t["score"] for t in prediction["top"]}
        assert scores.keys() == set(names)
        for index, name in enumerate(names):
            assert scores[name] == pytest.approx(float(probabilities[index]), abs=1e-5)

    annotated, rate = decode(out_video)
    assert annotated.shape == decoded.shape and rate == FPS
    # Frames before the first prediction are as they came; later ones carry its box.
    box = (slice(0, 12), slice(0, 20))
    assert np.abs(annotated[0][box].astype(int) - decoded[0][box]).mean() < 6
    assert np.abs(annotated[8][box].astype(int) - decoded[8][box]).mean() > 20


def test_out_video_draws_each_window_s_labels(trained_run, tmp_path, monkeypatch, capsys):
    """Three 1 s windows forced to classes 0, 1, 0 of a still video: in the decoded output the
    box of the second window differs from the first's, the third's equals the first's, and the
    rest of the picture is the input's."""
    still = render_clip(0, 0, size=96, frames=8)[0]
    video = tmp_path / "still.mp4"
    write_video(video, np.repeat(still[None], 3 * FPS, axis=0), FPS)
    classes = len(load_model(trained_run)[2])

    def clip_views(self, reader, first, count, clips):
        return torch.tensor([[first]])  # stands for the window's views: where it starts

    def score_groups(self, groups):
        return [torch.eye(classes)[(int(views[0, 0]) // FPS) % 2] for views in groups]

    monkeypatch.setattr(Predictor, "clip_views", clip_views)
    monkeypatch.setattr(Predictor, "score_groups", score_groups)
    out_video = tmp_path / "out" / "annotated.mp4"
    assert main(["predict", str(video), "--checkpoint", str(trained_run), "--topk", "1",
                 "--window-seconds", "1", "--out-video", str(out_video), "--json",
                 "--device", "cpu"]) == 0  # fmt: skip
    (result,) = json.loads(capsys.readouterr().out)
    labels = [w["top"][0]["label"] for w in result["windows"]]
    assert labels[0] == labels[2] != labels[1]

    original, fps = decode(video)
    annotated, rate = decode(out_video)
    assert annotated.shape == original.shape and rate == fps == FPS
    box = (slice(0, 14), slice(0, 48))  # inside the text box, whatever the font
    first, second, third = (annotated[w * FPS + 4][box].astype(int) for w in range(3))
    assert np.abs(first - second).mean() > 10  # different labels
    assert np.abs(first - third).mean() < 3  # the same label again
    assert np.abs(first - original[4][box]).mean() > 10  # a box was drawn
    outside = (slice(60, None), slice(60, None))
    assert np.abs(annotated[4][outside].astype(int) - original[4][outside]).mean() < 3
    assert list(out_video.parent.iterdir()) == [out_video]  # no temporary file left

    # Without windows: the whole video's prediction on every frame.
    whole = tmp_path / "whole.mp4"
    result = Predictor(trained_run, device="cpu").annotate(video, whole, topk=1)
    assert result["top"][0]["label"] == labels[0]
    annotated = decode(whole)[0]
    assert len(annotated) == len(original)
    assert all(np.abs(frame[box].astype(int) - first).mean() < 3 for frame in annotated)


def test_a_slow_prediction_skips_to_the_newest_window(trained_run, tmp_path, monkeypatch):
    """With skip_late, a prediction that takes until the whole source has arrived is followed
    by the prediction of the last window, not by the ones that came meanwhile."""
    video = tmp_path / "clip.mp4"
    write_video(video, np.concatenate([render_clip(0, i, size=32, frames=8, num_pairs=2)
                                       for i in range(3)]), FPS)  # fmt: skip
    started, arrived, put = threading.Event(), threading.Event(), PredictionStream._put
    puts, calls = [], []

    def gated_put(frames, item, stop):
        """Frames 1-8 at once; the others once the first prediction has started."""
        if len(puts) == 8:
            assert started.wait(timeout=30)
        put(frames, item, stop)
        puts.append(item)
        if len(puts) == 24:  # all frames have arrived (16 in the queue)
            arrived.set()

    probabilities = Predictor.probabilities

    def slow_probabilities(self, reader, first, count, clips):
        calls.append(count)
        if len(calls) == 2:  # the first prediction after the warm-up: all frames arrive
            started.set()
            assert arrived.wait(timeout=30)
        return probabilities(self, reader, first, count, clips)

    monkeypatch.setattr(PredictionStream, "_put", staticmethod(gated_put))
    monkeypatch.setattr(Predictor, "probabilities", slow_probabilities)
    stream = Predictor(trained_run, device="cpu").stream(video, stride_seconds=0.5,
                                                         skip_late=True)  # fmt: skip
    predictions = list(stream)
    summary = stream.summary()
    assert summary["frames"] == 24 and summary["predictions"] == len(predictions) == 2
    assert summary["skipped"] == 3  # the windows ending at 1.5, 2 and 2.5 s
    assert predictions[0]["end_s"] == 1.0 and predictions[1]["end_s"] == 3.0


def test_segment_sampling_streams_windows_of_window_seconds(trained_run, tmp_path):
    """A segment-sampling model's window is --window-seconds of frames, one frame from the
    middle of each of its data.clip_len segments; a file is read as fast as it decodes and
    every stride is predicted."""
    video = tmp_path / "clip.mp4"
    write_video(video, np.concatenate([render_clip(label, 0, size=32, frames=8, num_pairs=2)
                                       for label in (2, 3, 0, 1)]), FPS)  # fmt: skip
    predictor = Predictor(trained_run, device="cpu")
    predictor.config.data.sampling = "segment"
    with pytest.raises(ValueError, match="needs a positive --window-seconds"):
        predictor.stream(video)
    stream = predictor.stream(video, window_seconds=2.0, stride_seconds=1.0, topk=4)
    predictions = list(stream)
    assert [(p["start_s"], p["end_s"]) for p in predictions] == [(0, 2), (1, 3), (2, 4)]
    assert stream.summary()["skipped"] == 0

    decoded, _ = decode(video)
    model = predictor.model
    for prediction in predictions:
        first = round(prediction["start_s"] * FPS)
        # 16 frames in 8 segments of 2: the middle frame of each is its second one
        clip = torch.from_numpy(decoded[first + 1 : first + 16 : 2])
        with torch.no_grad():
            probabilities = model(predictor.transform(clip)[None]).softmax(-1)[0]
        for entry in prediction["top"]:
            index = predictor.class_names.index(entry["label"])
            assert entry["score"] == pytest.approx(float(probabilities[index]), abs=1e-5)


def default_sigint() -> None:
    """Start a child with SIGINT's default action whatever this process has (a child inherits
    an ignored SIGINT, and Python then raises no KeyboardInterrupt in it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ignore_sigint() -> None:
    """Start a child as ``nohup`` or a script's background job does: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("start", "signals", "ended"),
    [
        (default_sigint, [signal.SIGINT], "interrupted"),
        # Pending together, SIGINT is delivered first: ignored, then SIGTERM stops the stream.
        (ignore_sigint, [signal.SIGINT, signal.SIGTERM], r"terminated \(SIGTERM\)"),
    ],
    ids=["ctrl-c", "sigterm-with-sigint-ignored"],
)
def test_ctrl_c_or_sigterm_ends_the_stream_with_its_summary_and_video(
    trained_run, tmp_path, start, signals, ended
):
    video, out_video = tmp_path / "clip.mp4", tmp_path / "annotated.mp4"
    write_video(video, np.concatenate([render_clip(1, i, size=32, frames=8, num_pairs=2)
                                       for i in range(6)]), FPS)  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "sifa", "predict", str(video), "--stream", "--realtime",
         "--checkpoint", str(trained_run), "--stride-seconds", "0.25", "--device", "cpu",
         "--out-video", str(out_video)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=start,
    )  # fmt: skip
    first = json.loads(process.stdout.readline())  # the stream is running
    for number in signals:
        process.send_signal(number)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and first["end_s"] == 1.0
    summary = re.search(rf"stream {ended}: (\d+) frames at 8 fps, (\d+) predictions?,", err)
    assert summary, err
    frames, predictions = map(int, summary.groups())
    assert 8 <= frames < 48
    # Ctrl-C may land between a frame (or prediction) being counted and being written out.
    assert predictions - (1 + len(out.splitlines())) in (0, 1)
    assert frames - len(decode(out_video)[0]) in (0, 1)
    assert set(tmp_path.iterdir()) == {video, out_video}  # no temporary file left


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--stride-seconds", "1"], "--stride-seconds goes with --stream"),
        (["--stream", "--stride-seconds", "0"], "--stride-seconds must be positive, got 0.0"),
        (["--stream", "--stride-seconds", "-1"], "--stride-seconds must be positive, got -1.0"),
        (["--stream", "--json"], "--stream prints JSON lines already: drop --json"),
        (["--stream", "--window-seconds", "2"], "--window-seconds does not apply to --stream"),
        (["--stream", "--input-format", "mpegts"], "cannot be opened"),
        (["--input-format", "v4l2"], "--input-format goes with --stream"),
        (["--realtime"], "--realtime goes with --stream"),
        (["--stream", "--input-option", "x"], "--input-option takes KEY=VALUE, got 'x'"),
    ],
)
def test_bad_stream_options_give_one_line_errors(trained_run, tmp_path, capsys, options,
                                                 message):  # fmt: skip
    video = tmp_path / "video.ts"
    video.write_bytes(b"not a video")
    assert main(["predict", str(video), "--checkpoint", str(trained_run), "--device", "cpu",
                 *options]) == 2  # fmt: skip
    (line,) = capsys.readouterr().err.splitlines()[-1:]
    assert line.startswith("sifa predict: error: ") and message in line


def test_several_inputs_are_refused_with_out_video_or_stream(trained_run, tmp_path, capsys):
    for option in (["--out-video", str(tmp_path / "out.mp4")], ["--stream"]):
        assert main(["predict", "a.mp4", "b.mp4", "--checkpoint", str(trained_run),
                     *option]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert err.startswith("sifa predict: error: --") and "got 2" in err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("width", [32, 64, 224])
def test_labels_fit_the_frame_width(width):
    # Long labels on a narrow frame: the font shrinks, then the label is cut short, so the
    # box (and the text inside it) never reaches the right edge.
    frame = np.full((64, width, 3), 120, np.uint8)
    top = [{"label": "pushing something from left to right " * 2, "score": 0.9},
           {"label": "down_then_left", "score": 0.1}]  # fmt: skip
    drawn = draw_predictions(frame, top)
    changed = (drawn != 120).any(-1)
    assert changed[:, 0].any()  # the box starts at the left edge
    assert not changed[:, -1].any()  # and ends before the right one
    assert changed.sum() > 0.05 * changed.size  # something legible-sized was drawn
