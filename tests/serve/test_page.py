"""The page of ``sifa serve`` in a real browser: Debian's chromium driven by playwright, against
the real server (in this process, on a free port of 127.0.0.1) and a tiny trained model. What
the page shows is compared with what the API answers for the same file."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from pathlib import Path
from urllib.parse import urlsplit

import av
import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from sifa.engine.predict import Predictor
from sifa.serve import ServeSettings, create_app
from sifa.serve.server import bind, url_of

from video_fixtures import write_mp4

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 60_000  # two busy cores: scoring and annotating can take seconds
LONG_FPS = 8  # the long video: 5 tiny videos of 8 frames, so 1-second windows give 5


# -- the server, the browser and the videos (once per file) ------------------------------------


@pytest.fixture(scope="module")
def server_url(trained_run):
    """The app around ``trained_run`` served from a thread. The socket listens before the
    thread starts, so the browser and httpx can connect at once, with no polling."""
    sock = bind("127.0.0.1", 0)
    app = create_app(Predictor(trained_run, device="cpu"), ServeSettings())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield url_of(sock)
    server.should_exit = True
    thread.join()
    sock.close()


@pytest.fixture(scope="module")
def api(server_url):
    with httpx.Client(base_url=server_url, timeout=WAIT_MS / 1000) as client:
        yield client


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the page tests drive Debian's chromium "
            "(sudo apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url):
    """A fresh page at ``/`` that records its requests, console errors and uncaught exceptions
    (``page.requests``, ``page.console_errors``, ``page.page_errors``)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.requests, page.console_errors, page.page_errors = [], [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda error: page.page_errors.append(str(error)))
    page.goto(server_url)
    page.wait_for_selector("#classes li", state="attached")  # /v1/model has been shown
    yield page
    context.close()


@pytest.fixture(scope="module")
def short_video(tiny_data) -> Path:
    """A synthetic video of 8 frames of 32 x 32 at 8 fps."""
    return sorted(tiny_data.rglob("*.mp4"))[0]


@pytest.fixture(scope="module")
def long_video(tiny_data, tmp_path_factory) -> Path:
    """One video of each of the 4 classes and a fifth, end to end: 40 frames at 8 fps."""
    paths = sorted(tiny_data.rglob("*_0000.mp4"))
    paths = [*paths, sorted(tiny_data.rglob("*_0001.mp4"))[0]]
    frames = []
    for path in paths:
        with av.open(str(path)) as container:
            frames += [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 40
    out = tmp_path_factory.mktemp("long") / "long.mp4"
    return write_mp4(out, np.stack(frames), fps=LONG_FPS)


# -- helpers -------------------------------------------------------------------------------------


def post(api, route: str, video: Path, *, name: str | None = None, **query) -> httpx.Response:
    files = {"video": (name or video.name, video.read_bytes(), "video/mp4")}
    return api.post(route, params=query, files=files)


def upload(page, video: Path) -> str:
    """Choose ``video`` in the file input and wait until the page is done with it; returns
    ``done`` (scored and annotated) or ``failed`` (an error shown)."""
    page.set_input_files("#file", str(video))
    return finished(page, "#status")


def finished(page, status: str) -> str:
    """The end state of the status line ``status``, once it has one (an empty line is
    hidden, hence ``attached``)."""
    page.wait_for_selector(
        f"{status}[data-state=done], {status}[data-state=failed]", state="attached"
    )
    return page.get_attribute(status, "data-state")


def offsets_drawn(page) -> str:
    """``done`` once the offsets picture has arrived, ``failed`` once an error is shown."""
    return finished(page, "#offsets-status")


def bars_of(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#bars .bar",
        """bars => bars.map(bar => ({
            label: bar.querySelector('.label').textContent,
            score: Number(bar.dataset.score),
            text: bar.querySelector('.score').textContent,
            fill: bar.querySelector('.fill').getBoundingClientRect().width,
            track: bar.querySelector('.track').getBoundingClientRect().width,
        }))""",
    )


def assert_bars_show(page, top: list[dict]) -> None:
    """The bars name ``top``'s classes in order, with its scores, as wide as the scores."""
    bars = bars_of(page)
    assert [bar["label"] for bar in bars] == [entry["label"] for entry in top]
    for bar, entry in zip(bars, top, strict=True):
        assert bar["score"] == entry["score"]
        assert bar["text"].endswith("%")
        assert float(bar["text"][:-1]) == pytest.approx(100 * entry["score"], abs=0.051)
        # a fill of at least 2 pixels shows where a score near 0 is
        assert bar["fill"] == pytest.approx(max(2, entry["score"] * bar["track"]), abs=1)


def drop_file(page, video: Path) -> None:
    """Drop ``video`` on the drop zone, as a file dragged from the desktop would be."""
    transfer = page.evaluate_handle(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'video/mp4'}));
            return transfer;
        }""",
        [base64.b64encode(video.read_bytes()).decode(), video.name],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


# -- the tests -----------------------------------------------------------------------------------


def test_an_upload_shows_the_top_classes_as_bars_and_plays_the_video(page, api, short_video):
    expected = post(api, "/v1/predict", short_video, topk=3).json()
    page.fill("#topk", "3")
    assert upload(page, short_video) == "done", page.inner_text("#error")

    assert_bars_show(page, expected["top"])
    original = page.locator("#original")
    assert original.get_attribute("src").startswith("blob:")
    # The browser reads the chosen file itself: its frames have the file's size.
    page.wait_for_function(
        "v => v.readyState >= 1 && v.videoWidth === 32", arg=original.element_handle()
    )
    assert page.is_hidden("#error")
    assert page.is_hidden("#timeline-box")  # no windows asked for


def test_the_annotated_video_is_the_servers_mp4_and_plays(page, api, short_video):
    expected = post(api, "/v1/annotate", short_video)
    assert upload(page, short_video) == "done", page.inner_text("#error")

    annotated = page.locator("#annotated").element_handle()
    kind, sha256 = page.evaluate(
        """async v => {
            const blob = await (await fetch(v.src)).blob();
            const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
            return [blob.type, Array.from(new Uint8Array(digest),
                                          b => b.toString(16).padStart(2, '0')).join('')];
        }""",
        annotated,
    )
    assert kind == "video/mp4"
    assert sha256 == hashlib.sha256(expected.content).hexdigest()  # not the original file
    assert page.evaluate("v => v.play().then(() => true)", annotated)
    # Decoded (its frames have a size) and playing (some time of it has been played).
    page.wait_for_function(
        "v => v.videoWidth === 32 && v.played.length > 0 && v.played.end(0) > 0", arg=annotated
    )
    assert page.evaluate("v => v.error", annotated) is None
    assert page.is_hidden("#error")


def test_windows_make_a_timeline_whose_segments_seek_the_video(page, api, long_video):
    expected = post(api, "/v1/predict", long_video, topk=2, window_seconds=1).json()
    windows = expected["windows"]
    assert len(windows) == 5
    page.fill("#topk", "2")
    page.fill("#window-seconds", "1")
    assert upload(page, long_video) == "done", page.inner_text("#error")

    segments = page.eval_on_selector_all(
        "#timeline .segment",
        """segments => segments.map(s => ({
            label: s.textContent, title: s.title, width: s.getBoundingClientRect().width,
        }))""",
    )
    assert [s["label"] for s in segments] == [w["top"][0]["label"] for w in windows]
    total_width = page.locator("#timeline").bounding_box()["width"] - 2  # its border
    duration = windows[-1]["end_s"] - windows[0]["start_s"]
    for segment, window in zip(segments, windows, strict=True):
        assert f"{100 * window['top'][0]['score']:.1f}%" in segment["title"]
        share = (window["end_s"] - window["start_s"]) / duration
        assert segment["width"] == pytest.approx(share * total_width, abs=1)
    assert_bars_show(page, expected["top"])  # the average of the windows

    page.locator("#timeline .segment").nth(2).click()
    page.wait_for_function(
        "([v, time]) => Math.abs(v.currentTime - time) < 0.01 && !v.seeking",
        arg=[page.locator("#original").element_handle(), windows[2]["start_s"]],
    )
    # The segment being played is marked (from the player's timeupdate).
    page.wait_for_selector("#timeline .segment:nth-child(3)[aria-current]")
    assert page.locator("#timeline .segment[aria-current]").count() == 1


def test_a_bad_file_shows_the_servers_error_and_the_page_recovers(page, api, short_video, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("these are words, not the frames of a video\n" * 20)
    answer = post(api, "/v1/predict", bad)
    assert answer.status_code == 422
    assert upload(page, bad) == "failed"
    error = page.locator("#error")
    assert error.is_visible()
    assert error.get_attribute("role") == "alert"
    assert "bad.mp4" in error.inner_text()
    assert answer.json()["error"] in error.inner_text()
    assert page.locator("#bars .bar").count() == 0

    # A good video dropped on the drop zone is scored as if nothing had happened.
    expected = post(api, "/v1/predict", short_video).json()
    drop_file(page, short_video)
    assert finished(page, "#status") == "done", page.inner_text("#error")
    assert page.is_hidden("#error")
    assert page.inner_text("#file-name") == short_video.name
    assert_bars_show(page, expected["top"])
    assert page.page_errors == []


def test_the_offsets_button_shows_the_offsets_picture(page, api, long_video):
    stages = api.get("/v1/model").json()["sifa_stages"]
    options = page.eval_on_selector_all("#offsets-stage option", "o => o.map(x => x.value)")
    assert options == stages
    assert len(stages) > 1  # sifa_resnet18 has several SIFA stages
    assert upload(page, long_video) == "done", page.inner_text("#error")

    # An impossible first frame: the server's message, in the error box.
    page.fill("#offsets-frame", "39")
    page.click("#offsets-button")
    assert offsets_drawn(page) == "failed"
    refused = post(api, "/v1/offsets", long_video, frame=39)
    assert refused.status_code == 422
    assert refused.json()["error"] in page.inner_text("#error")

    page.fill("#offsets-frame", "8")
    page.select_option("#offsets-stage", stages[1])  # not the server's default
    page.click("#offsets-button")
    assert offsets_drawn(page) == "done", page.inner_text("#error")
    image = page.locator("#offsets-image").element_handle()
    page.wait_for_function("img => img.naturalWidth > 0", arg=image)
    assert page.is_hidden("#error")
    picture = post(api, "/v1/offsets", long_video, frame=8, stage=stages[1])
    assert picture.headers["content-type"] == "image/png"
    size = list(Image.open(io.BytesIO(picture.content)).size)
    assert page.evaluate("img => [img.naturalWidth, img.naturalHeight]", image) == size


def test_the_page_describes_the_model_and_stays_on_this_server(page, api, short_video):
    model = api.get("/v1/model").json()
    assert page.inner_text("#model-name") == model["name"]
    assert page.locator("#classes li").all_text_contents() == model["classes"]  # folded
    assert f"clips of {model['clip_len']} frames" in page.inner_text("#model-clip")
    assert upload(page, short_video) == "done", page.inner_text("#error")
    page.click("#offsets-button")
    assert offsets_drawn(page) == "done", page.inner_text("#error")
    page.wait_for_function("document.getElementById('offsets-image').naturalWidth > 0")

    paths = {urlsplit(url).path for url in page.requests}
    for path in ("/", "/static/app.js", "/static/style.css", "/v1/model", "/v1/predict",
                 "/v1/annotate", "/v1/offsets"):  # fmt: skip
        assert path in paths  # the recording saw the page's own requests
    # blob: URLs are the page's own files and answers, named after this server's origin
    hosts = {urlsplit(url.removeprefix("blob:")).hostname for url in page.requests}
    assert hosts == {"127.0.0.1"}
    assert page.console_errors == []
    assert page.page_errors == []


def test_a_model_without_sifa_stages_offers_no_offsets(browser, server_url, api, short_video):
    # The tiny model has SIFA stages; a TSM or C2D model's /v1/model lists none.
    model = {**api.get("/v1/model").json(), "sifa_stages": []}
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.route("**/v1/model", lambda route: route.fulfill(json=model))
        page.goto(server_url)
        page.wait_for_selector("#classes li", state="attached")
        assert upload(page, short_video) == "done", page.inner_text("#error")

        assert page.is_hidden("#offsets-form")
        assert page.is_disabled("#offsets-button")
        assert page.inner_text("#offsets-note") == (
            f"{model['name']} has no SIFA stages, so it has no offsets to draw."
        )
    finally:
        context.close()
