"""A screenshot of the page of ``sifa serve`` for the documentation.

python examples/serve_screenshots.py CHECKPOINT VIDEO OUT_DIR [--window-seconds S]

Serves CHECKPOINT on a free port of 127.0.0.1 inside this process, has chromium (through
playwright: pip install playwright; Debian's browser: apt-get install chromium) upload VIDEO,
waits for the bars, the timeline (with --window-seconds), the annotated video and an offsets
picture, and writes OUT_DIR/serve_page.png (the full page).
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from sifa.engine.predict import Predictor
from sifa.serve import ServeSettings, create_app
from sifa.serve.server import bind, url_of

WAIT_MS = 180_000  # a real model on a CPU can take a while to score and annotate a video


@contextlib.contextmanager
def running_server(predictor: Predictor):
    """The app on a free port of 127.0.0.1, served from a thread; yields its URL. The socket
    listens before the thread starts, so the browser can connect at once."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(create_app(predictor, ServeSettings()), log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def show_everything(page, video: Path, window_seconds: float | None) -> None:
    """Upload ``video`` and wait until each part of the page shows its answer."""
    if window_seconds:
        page.fill("#window-seconds", f"{window_seconds:g}")
    page.set_input_files("#file", str(video))
    page.wait_for_selector("#status[data-state=done], #status[data-state=failed]",
                           timeout=WAIT_MS)  # fmt: skip
    if page.get_attribute("#status", "data-state") == "failed":
        raise RuntimeError(f"the page shows an error: {page.inner_text('#error')}")
    if window_seconds:
        page.wait_for_selector("#timeline .segment")
    # Both players paused on the same frame a third into the video, for a steady picture.
    page.wait_for_function(
        "['original', 'annotated'].every(id => document.getElementById(id).readyState >= 2)"
    )
    page.evaluate(
        """() => {
            const players = ['original', 'annotated'].map(id => document.getElementById(id));
            const time = players[0].duration / 3;
            return Promise.all(players.map(video => new Promise(done => {
                video.pause();
                video.addEventListener('seeked', done, {once: true});
                video.currentTime = time;
            })));
        }"""
    )
    page.click("#offsets-button")
    page.wait_for_function(
        "document.getElementById('offsets-image').naturalWidth > 0", timeout=WAIT_MS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run folder, a .safetensors checkpoint, ...")
    parser.add_argument("video", type=Path, help="the video to upload")
    parser.add_argument("out_dir", type=Path, help="where serve_page.png is written")
    parser.add_argument("--window-seconds", type=float, help="score windows of this length")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser to drive")
    parser.add_argument("--width", type=int, default=1200, help="page width in pixels")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()

    predictor = Predictor(args.checkpoint, device=args.device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "serve_page.png"
    with running_server(predictor) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(url)
            show_everything(page, args.video, args.window_seconds)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    print(out)


if __name__ == "__main__":
    main()
