"""``sifa serve`` as a process: it announces where it listens, serves, and on SIGTERM finishes
the request in flight before it exits; its options and errors."""

from __future__ import annotations

import argparse
import dataclasses
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from sifa.cli import build_parser
from sifa.cli.serve import settings_of
from sifa.serve import ServeSettings
from sifa.serve.app import HOLD_VARIABLE

TIMEOUT = 120  # seconds: a bound on every wait, never reached when all is well


class ServerProcess:
    """``sifa serve`` in a child process, its stderr read line by line on a thread."""

    def __init__(self, checkpoint: Path, *options: str, env: dict | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sifa", "serve", str(checkpoint), "--port", "0",
             "--device", "cpu", *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for("listening on ").split("listening on ")[1].split()[0]

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, text: str) -> str:
        """The first line from now on that holds ``text`` (fails if the process ends first)."""
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            if line is None:
                pytest.fail(f"sifa serve ended before saying {text!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if text in line:
                return line

    def rest(self) -> list[str]:
        """Every line until the process ends."""
        while (line := self.lines.get(timeout=TIMEOUT)) is not None:
            self.seen.append(line)
        return self.seen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=TIMEOUT)


@pytest.fixture
def clip(tiny_data) -> Path:
    return sorted(tiny_data.rglob("*.mp4"))[0]


def test_sigterm_finishes_the_request_in_flight_then_exits(trained_run, clip, tmp_path):
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    server = ServerProcess(trained_run, env={HOLD_VARIABLE: str(hold)})
    try:
        answers: queue.Queue = queue.Queue()

        def request() -> None:
            files = {"video": (clip.name, clip.read_bytes(), "video/mp4")}
            answers.put(httpx.post(f"{server.url}/v1/predict", files=files, timeout=TIMEOUT))

        threading.Thread(target=request, daemon=True).start()
        with open(hold, "wb") as release:  # opens once the request waits at the hold
            server.process.send_signal(signal.SIGTERM)
            # uvicorn has stopped listening and waits for the request in flight.
            server.wait_for("Waiting for connections to close")
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{server.url}/v1/health", timeout=TIMEOUT)
            release.write(b"go")
        answer = answers.get(timeout=TIMEOUT)
        assert server.process.wait(timeout=TIMEOUT) == 128 + signal.SIGTERM
        lines = server.rest()
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["video"] == clip.name and answer.json()["top"]
    assert any("stopped after 1 requests" in line for line in lines), lines
    assert lines[-1] == "sifa serve: terminated (SIGTERM)"
    assert not any("Traceback" in line for line in lines), lines


def test_the_server_answers_and_ctrl_c_stops_it(trained_run, clip):
    server = ServerProcess(trained_run, "--max-batch", "1")
    try:
        model = httpx.get(f"{server.url}/v1/model", timeout=TIMEOUT).json()
        page = httpx.get(f"{server.url}/", timeout=TIMEOUT)
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=TIMEOUT) == 128 + signal.SIGINT
        lines = server.rest()
    finally:
        server.stop()
    assert model["name"] == "sifa_resnet18" and model["limits"]["max_batch"] == 1
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert lines[-1] == "sifa serve: interrupted"


def test_the_listening_socket_names_tcp_so_that_answers_are_not_held_back():
    from sifa.serve.server import bind

    # asyncio sets TCP_NODELAY on accepted connections only for a socket that names its
    # protocol; without it each answer waited ~40 ms for a delayed ACK.
    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP


def serve_args(*options: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "RUN", *options])


def test_the_options_default_to_the_settings_defaults():
    assert settings_of(serve_args()) == ServeSettings()
    changed = settings_of(serve_args("--max-batch", "1", "--max-queue", "3", "--timeout-s", "9"))
    assert (changed.max_batch, changed.max_queue, changed.timeout_s) == (1, 3, 9.0)
    assert {f.name for f in dataclasses.fields(ServeSettings)} <= set(vars(serve_args()))


def test_bad_options_and_a_busy_port_are_one_line_errors(trained_run, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sifa", "serve", *args], capture_output=True, text=True,
            timeout=TIMEOUT,
        )  # fmt: skip

    bad_queue = run(str(trained_run), "--max-queue", "0")
    assert bad_queue.returncode == 2
    assert bad_queue.stderr.strip() == "sifa serve: error: max_queue must be at least 1, got 0"
    missing = run(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "nowhere" in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run(str(trained_run), "--port", str(port), "--device", "cpu")
    assert busy.returncode == 2
    assert f"sifa serve: error: cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
