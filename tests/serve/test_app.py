"""The HTTP API of ``sifa serve``, in process: the same answers as ``sifa predict --json``,
batching, the model's description, and every kind of bad request answered with a readable 4xx
while the server goes on serving."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from sifa.cli import main
from sifa.engine.predict import Predictor
from sifa.serve import ClipBatcher, ServeSettings, create_app

from video_fixtures import indexed_frames, write_mp4


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return Predictor(trained_run, device="cpu")


@pytest.fixture(scope="module")
def clip(tiny_data) -> Path:
    return sorted(tiny_data.rglob("*.mp4"))[0]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """40 frames at 8 fps: five windows of one second."""
    return write_mp4(tmp_path_factory.mktemp("long") / "long.mp4", indexed_frames(40), fps=8)


def serving(predictor: Predictor, **settings) -> TestClient:
    return TestClient(create_app(predictor, ServeSettings(**settings)))


def upload(path: Path, name: str | None = None) -> dict:
    return {"video": (name or path.name, path.read_bytes(), "video/mp4")}


def cli_predict(capsys, checkpoint: Path, video: Path, *options: str) -> dict:
    capsys.readouterr()
    status = main(["predict", str(video), "--checkpoint", str(checkpoint), "--json",
                   "--device", "cpu", *options])  # fmt: skip
    assert status == 0
    (entry,) = json.loads(capsys.readouterr().out)
    return entry


def uploads_left(client: TestClient) -> list[Path]:
    service = client.app.state.service
    service.decoders.submit(lambda: None).result()  # the jobs before it have ended
    return sorted(service.uploads.iterdir())


def test_predict_answers_what_sifa_predict_json_prints(predictor, trained_run, clip, capsys):
    expected = cli_predict(capsys, trained_run, clip, "--topk", "3")
    with serving(predictor, max_batch=1, workers=1) as client:
        answer = client.post("/v1/predict?topk=3", files=upload(clip, "mine.mp4"))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {**expected, "video": "mine.mp4"}
        assert uploads_left(client) == []


def test_windows_without_batching_equal_the_cli_bit_for_bit(
    predictor, trained_run, long_clip, capsys
):
    expected = cli_predict(capsys, trained_run, long_clip, "--window-seconds", "1")
    with serving(predictor, max_batch=1) as client:
        answer = client.post("/v1/predict?window_seconds=1", files=upload(long_clip))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {**expected, "video": long_clip.name}
    assert len(expected["windows"]) == 5


def test_windows_are_batched_and_score_as_alone(predictor, trained_run, long_clip, capsys):
    expected = cli_predict(capsys, trained_run, long_clip, "--window-seconds", "1")
    with serving(predictor, max_batch=8, max_wait_ms=50) as client:
        answer = client.post("/v1/predict?window_seconds=1", files=upload(long_clip)).json()
        health = client.get("/v1/health").json()
    # Five windows of one clip each, in fewer model calls than windows.
    assert health["views"] == 5 * predictor.config.data.test_crops
    assert health["batches"] < 5
    for got, want in zip(answer["windows"], expected["windows"], strict=True):
        assert [t["label"] for t in got["top"]] == [t["label"] for t in want["top"]]
        for a, b in zip(got["top"], want["top"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_batched_scores_equal_scores_of_each_group_alone(predictor, long_clip):
    from sifa.data.decoding import open_video

    with open_video(long_clip) as reader:
        groups = [predictor.clip_views(reader, first, 8, 1) for first in range(0, 40, 8)]
    alone = predictor.score_groups(groups)
    batcher = ClipBatcher(predictor.score, max_batch=16, max_wait_s=0)
    together = batcher.score_groups(groups)
    batcher.close()
    assert batcher.calls == 1
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_the_model_is_described_with_the_weights_sha256(predictor, trained_run):
    with serving(predictor) as client:
        model = client.get("/v1/model").json()
        health = client.get("/v1/health").json()
    data = predictor.config.data
    assert model["name"] == predictor.config.model.name == "sifa_resnet18"
    assert model["classes"] == predictor.class_names
    assert (model["clip_len"], model["test_crop_size"]) == (data.clip_len, data.test_crop_size)
    assert model["weights_sha256"] == hashlib.sha256(predictor.checkpoint.read_bytes()).hexdigest()
    assert model["sifa_stages"]
    assert health["status"] == "ok" and health["in_progress"] == 0


def test_annotate_answers_the_annotated_video_and_its_prediction(predictor, long_clip):
    with serving(predictor) as client:
        predicted = client.post("/v1/predict", files=upload(long_clip)).json()
        answer = client.post("/v1/annotate", files=upload(long_clip))
        left = uploads_left(client)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "video/mp4"
    assert json.loads(answer.headers["x-sifa-prediction"]) == predicted
    with av.open(io.BytesIO(answer.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 40
    assert frames[0].shape == (32, 48, 3)
    # The labels are drawn: the frame differs from the uniform grey it was.
    assert np.ptp(frames[0]) > 50
    assert left == []


def test_offsets_answer_a_png_and_a_clip_past_the_end_is_refused(predictor, long_clip):
    with serving(predictor) as client:
        stages = client.get("/v1/model").json()["sifa_stages"]
        every = [client.post(f"/v1/offsets?stage={s}", files=upload(long_clip)) for s in stages]
        picture = client.post("/v1/offsets?frame=0", files=upload(long_clip))
        past = client.post("/v1/offsets?frame=39", files=upload(long_clip))
        stage = client.post("/v1/offsets?stage=nowhere", files=upload(long_clip))
    # Every stage the model lists has a frame pair to draw at its clip length.
    assert stages and [a.status_code for a in every] == [200] * len(stages)
    assert picture.status_code == 200, picture.text
    assert picture.headers["content-type"] == "image/png"
    assert picture.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert past.status_code == 422
    assert "frame 39" in past.json()["error"] and "long.mp4" in past.json()["error"]
    assert "/tmp" not in past.json()["error"]  # no server path in it
    assert stage.status_code == 422 and "nowhere" in stage.json()["error"]


# -- bad requests --------------------------------------------------------------------------


def audio_only_mp4(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        stream.layout = "mono"
        samples = np.zeros((1, 1024), dtype=np.float32)
        for index in range(8):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frameless_mp4(path: Path) -> Path:
    """An mp4 with its header written and not one frame after it."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    return path


def bad_videos(folder: Path, clip: Path) -> dict[str, tuple[str, bytes]]:
    data = clip.read_bytes()
    # With its index at the front, a cut mp4 opens and fails where its frames end.
    indexed = write_mp4(folder / "fs.mp4", indexed_frames(40, 64, 64), fps=8, faststart=True)
    return {
        "text": ("notes.mp4", b"this is not a video\n" * 20),
        "truncated": ("cut.mp4", data[: len(data) // 2]),
        "truncated, index first": ("cut2.mp4", indexed.read_bytes()[: indexed.stat().st_size // 2]),
        "audio only": ("sound.mp4", audio_only_mp4(folder / "sound.mp4").read_bytes()),
        "no frames": ("empty.mp4", frameless_mp4(folder / "empty.mp4").read_bytes()),
        "empty file": ("nothing.mp4", b""),
    }


def test_bad_videos_are_answered_422_naming_the_upload_and_serving_goes_on(
    predictor, clip, tmp_path
):
    with serving(predictor) as client:
        for case, (name, content) in bad_videos(tmp_path, clip).items():
            answer = client.post("/v1/predict", files={"video": (name, content, "video/mp4")})
            assert answer.status_code == 422, (case, answer.text)
            message = answer.json()["error"]
            assert message.startswith(f"{name}:"), (case, message)
            assert "Traceback" not in message and str(tmp_path) not in message
        assert client.post("/v1/predict", files=upload(clip)).status_code == 200
        assert uploads_left(client) == []


def test_frames_over_the_pixel_limit_are_refused(predictor, clip):
    with serving(predictor, max_pixels=32 * 31) as client:
        answer = client.post("/v1/predict", files=upload(clip))
    assert answer.status_code == 422
    assert "32x32" in answer.json()["error"] and "--max-pixels" in answer.json()["error"]


def test_wrong_content_type_missing_part_and_bad_options_are_named(predictor, clip):
    with serving(predictor) as client:
        raw = client.post("/v1/predict", content=clip.read_bytes(),
                          headers={"content-type": "video/mp4"})  # fmt: skip
        other_part = client.post("/v1/predict", files={"clip": ("a.mp4", b"x", "video/mp4")})
        topk = client.post("/v1/predict?topk=0", files=upload(clip))
        window = client.post("/v1/predict?window_seconds=-1", files=upload(clip))
        good = client.post("/v1/predict", files=upload(clip))
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["error"]
    assert other_part.status_code == 422 and "'video'" in other_part.json()["error"]
    assert topk.status_code == 422 and topk.json()["error"].startswith("topk:")
    assert window.status_code == 422 and window.json()["error"].startswith("window_seconds:")
    assert good.status_code == 200


def multipart_body(content: bytes, boundary: str = "sifa-test-boundary") -> tuple[bytes, str]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n'
            f"Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_an_upload_over_the_limit_is_answered_413_with_or_without_a_length(predictor, clip):
    body, content_type = multipart_body(b"\0" * 4096)
    with serving(predictor, max_upload_mb=2048 / 2**20) as client:
        declared = client.post("/v1/predict", content=body, headers={"content-type": content_type})

        def chunks():  # no Content-Length: the body comes chunked, counted as it arrives
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        streamed = client.post("/v1/predict", content=chunks(),
                               headers={"content-type": content_type})  # fmt: skip
        small, _ = multipart_body(b"\0" * 100)
        fits = client.post("/v1/predict", content=small, headers={"content-type": content_type})
        left = uploads_left(client)
    assert declared.status_code == 413 and "--max-upload-mb" in declared.json()["error"]
    assert streamed.status_code == 413 and "--max-upload-mb" in streamed.json()["error"]
    assert fits.status_code == 422  # within the limit, and not a video
    assert left == []


def test_a_full_queue_answers_503_with_retry_after(predictor, clip):
    with serving(predictor, max_queue=2) as client:
        service = client.app.state.service
        service.admit()
        service.admit()  # two requests in progress: the queue is full
        busy = client.post("/v1/predict", files=upload(clip))
        service.release()
        served = client.post("/v1/predict", files=upload(clip))
        service.release()
        health = client.get("/v1/health").json()
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1" and "--max-queue 2" in busy.json()["error"]
    assert served.status_code == 200
    assert health["in_progress"] == 0


def test_a_request_over_the_time_limit_is_answered_504_and_its_upload_removed(predictor, long_clip):
    with serving(predictor, timeout_s=1e-6, workers=1) as client:
        answer = client.post("/v1/predict?window_seconds=1", files=upload(long_clip))
        left = uploads_left(client)
        in_progress = client.get("/v1/health").json()["in_progress"]
    assert answer.status_code == 504 and "--timeout-s" in answer.json()["error"]
    assert left == [] and in_progress == 0


def test_a_client_file_name_is_only_shown_never_opened(predictor, clip):
    with serving(predictor) as client:
        answer = client.post("/v1/predict", files=upload(clip, "../../../etc/passwd"))
    assert answer.status_code == 200
    assert answer.json()["video"] == "passwd"


def test_the_settings_are_checked():
    with pytest.raises(ValueError, match="max_queue must be at least 1"):
        ServeSettings(max_queue=0).check()
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        ServeSettings(timeout_s=0).check()


def test_a_published_model_folder_serves_the_same_answers(predictor, trained_run, clip, tmp_path):
    from sifa.deploy.publish import publish_run

    folder = tmp_path / "model"
    publish_run(trained_run, folder)
    published = Predictor(folder, device="cpu")
    with serving(predictor, max_batch=1) as client:
        from_run = client.post("/v1/predict", files=upload(clip)).json()
    with serving(published, max_batch=1) as client:
        from_folder = client.post("/v1/predict", files=upload(clip)).json()
        model = client.get("/v1/model").json()
    assert from_folder == from_run
    assert model["weights"] == "model.safetensors"
    weights = (folder / "model.safetensors").read_bytes()
    assert model["weights_sha256"] == hashlib.sha256(weights).hexdigest()
