"""``sifa benchmark serve``: throughput and latency of ``sifa serve`` on loopback against a
plain :class:`~sifa.engine.predict.Predictor` loop, and the server's memory over many requests.

Self-contained: in a temporary folder, a random-weight checkpoint of the model as ``sifa demo``
trains it (see :func:`sifa.benchmarks.inference.model_setting`) and one synthetic video. The
server runs as a child process (``sifa serve --port 0``, on 127.0.0.1 only) once per batch size
asked for; clients are threads of this process, each with its own connection, sending the
video to ``POST /v1/predict`` as fast as they get answers. Every phase is bounded by a count of
requests and by ``max_seconds``.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

TIMEOUT_S = 120.0  # one request, or the server's start


@dataclass
class LoadResult:
    """One row of the table: a way of predicting under one load."""

    mode: str  # "Predictor loop" or "sifa serve --max-batch N"
    clients: int
    requests: int  # answered 200
    refused: int  # answered otherwise (503 when the queue is full, ...)
    seconds: float
    latencies_ms: list[float]
    views_per_call: float | None = None  # the server's batches, from /v1/health

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class MemoryResult:
    requests: int
    before_mib: float  # the server's resident memory after the warm-up
    after_mib: float

    @property
    def growth_mib(self) -> float:
        return self.after_mib - self.before_mib


@dataclass
class ServeBenchmark:
    model: str
    clip: str
    threads: int
    rows: list[LoadResult]
    memory: MemoryResult | None


class ServerProcess:
    """``sifa serve`` as a child process on a free port of 127.0.0.1."""

    def __init__(
        self, checkpoint: Path, max_batch: int, threads: int, max_queue: int, workers: int = 2
    ) -> None:
        command = [sys.executable, "-m", "sifa", "serve", str(checkpoint), "--host",
                   "127.0.0.1", "--port", "0", "--device", "cpu", "--quiet", "--max-batch",
                   str(max_batch), "--max-queue", str(max_queue),
                   "--workers", str(workers)]  # fmt: skip
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environment
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._announced_url()

    def _read(self) -> None:
        for line in self.process.stderr:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _announced_url(self) -> str:
        said = []
        while True:
            try:
                line = self._lines.get(timeout=TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise RuntimeError("sifa serve did not start within the time limit") from None
            if line is None:
                raise RuntimeError("sifa serve ended before listening:\n" + "\n".join(said))
            said.append(line)
            if "listening on " in line:
                return line.split("listening on ")[1].split()[0]

    def resident_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc: resident memory is measured on Linux only")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/v1/health", timeout=TIMEOUT_S).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _predictor_loop(checkpoint: Path, video: Path, requests: int, max_seconds: float):
    """The same predictions without HTTP: ``Predictor.predict`` in a loop, in this process."""
    from sifa.engine.predict import Predictor

    predictor = Predictor(checkpoint, device="cpu")
    for _ in range(3):  # warm-up
        predictor.predict(video)
    latencies, start = [], time.perf_counter()
    while len(latencies) < requests and time.perf_counter() - start < max_seconds:
        began = time.perf_counter()
        predictor.predict(video)
        latencies.append(1000 * (time.perf_counter() - began))
    seconds = time.perf_counter() - start
    return LoadResult("Predictor loop", 1, len(latencies), 0, seconds, latencies)


def _load(
    url: str, video: bytes, clients: int, requests: int, max_seconds: float
) -> tuple[int, int, float, list[float]]:
    """``clients`` threads sending ``requests`` predictions in all, each on its own
    connection: ``(answered, refused, seconds, latencies_ms of the answered)``."""
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    latencies: list[float] = []
    refused = 0

    def client() -> None:
        nonlocal refused
        with httpx.Client(timeout=TIMEOUT_S) as session:
            while time.perf_counter() < deadline:
                with lock:
                    if next(counter, None) is None:
                        return
                began = time.perf_counter()
                answer = session.post(
                    f"{url}/v1/predict", files={"video": ("clip.mp4", video, "video/mp4")}
                )
                took = 1000 * (time.perf_counter() - began)
                with lock:
                    if answer.status_code == 200:
                        latencies.append(took)
                    else:
                        refused += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return len(latencies), refused, time.perf_counter() - start, latencies


def _serve_rows(
    server: ServerProcess, video: bytes, max_batch: int, clients_list: list[int],
    requests: int, max_seconds: float,
) -> list[LoadResult]:  # fmt: skip
    _load(server.url, video, 2, 6, max_seconds)  # warm-up: first calls, connections
    rows = []
    for clients in clients_list:
        before = server.health()
        answered, refused, seconds, latencies = _load(
            server.url, video, clients, requests, max_seconds
        )
        after = server.health()
        calls = after["batches"] - before["batches"]
        views = after["views"] - before["views"]
        rows.append(
            LoadResult(f"sifa serve --max-batch {max_batch}", clients, answered, refused,
                       seconds, latencies, views / calls if calls else None)
        )  # fmt: skip
    return rows


def _memory(server: ServerProcess, video: bytes, requests: int, max_seconds: float):
    _load(server.url, video, 4, 50, max_seconds)  # warm-up: allocations that stay
    before = server.resident_mib()
    answered, _, _, _ = _load(server.url, video, 4, requests, max_seconds)
    return MemoryResult(answered, before, server.resident_mib())


def benchmark_serve(
    *,
    model: str = "sifa_resnet18",
    max_batches: tuple[int, ...] = (1, 8),
    clients: tuple[int, ...] = (1, 4, 16),
    requests: int = 64,
    memory_requests: int = 1000,
    frames: int | None = None,
    threads: int | None = None,
    workers: int = 2,
    max_seconds: float = 120.0,
) -> ServeBenchmark:
    """Measure (see the module): the Predictor loop, then per ``max_batches`` a server under
    each number of ``clients`` (``requests`` each), then the memory of the last server over
    ``memory_requests`` requests (0: not measured). ``frames``: the video's length (default:
    one clip). ``threads``: torch threads of the loop and of each server (default: this
    process's); ``workers``: the servers' decoding threads (``sifa serve --workers``)."""
    import logging

    import torch

    from sifa.benchmarks.inference import FPS, make_checkpoint, model_setting, synthetic_frames
    from sifa.data.synthetic import write_video

    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request
    setting = model_setting(model)
    threads = threads or torch.get_num_threads()
    if not max_batches:
        raise ValueError("give at least one --max-batch")
    with tempfile.TemporaryDirectory(prefix="sifa-serve-benchmark-") as folder:
        folder = Path(folder)
        checkpoint = make_checkpoint(folder, model, setting)
        video = folder / "clip.mp4"
        write_video(video, synthetic_frames(frames or setting.frames, setting.size), FPS)
        with _torch_threads(threads):
            rows = [_predictor_loop(checkpoint, video, requests, max_seconds)]
        content = video.read_bytes()
        memory = None
        for position, max_batch in enumerate(max_batches):
            server = ServerProcess(checkpoint, max_batch, threads, max(clients) + 1, workers)
            try:
                rows += _serve_rows(server, content, max_batch, list(clients), requests,
                                    max_seconds)  # fmt: skip
                if memory_requests and position == len(max_batches) - 1:
                    memory = _memory(server, content, memory_requests, max_seconds * 4)
            finally:
                server.stop()
    clip = f"{frames or setting.frames}x{setting.size}x{setting.size}"
    return ServeBenchmark(model, clip, threads, rows, memory)


class _torch_threads:
    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc) -> None:
        import torch

        torch.set_num_threads(self.before)


def format_serve(result: ServeBenchmark) -> str:
    """The table (Markdown) and the memory line."""
    loop = result.rows[0]
    lines = [
        f"{result.model}, one {result.clip} clip per request, CPU, {result.threads} torch "
        "threads per process; clients on 127.0.0.1",
        "",
        "| mode | clients | requests | req/s | vs loop | p50 ms | p95 ms | views per call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        refused = f" ({row.refused} refused)" if row.refused else ""
        per_call = f"{row.views_per_call:.1f}" if row.views_per_call else "1.0"
        lines.append(
            f"| {row.mode} | {row.clients} | {row.requests}{refused} | {row.per_second:.1f} | "
            f"{row.per_second / loop.per_second:.2f}x | {row.percentile(0.5):.1f} | "
            f"{row.percentile(0.95):.1f} | {per_call} |"
        )
    if result.memory:
        memory = result.memory
        lines += [
            "",
            f"server memory (resident): {memory.before_mib:.1f} MiB after the warm-up, "
            f"{memory.after_mib:.1f} MiB after {memory.requests} more requests "
            f"({memory.growth_mib:+.1f} MiB)",
        ]
    return "\n".join(lines)
