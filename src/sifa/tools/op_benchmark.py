"""Side-by-side timing and memory of the SIFA operator's backends, and of a 1x3x3 convolution.

At the SIFA-Net shapes (``batch`` clips of ``frames`` frames: the operator sees the
``batch * (frames - 1)`` frame pairs, the convolution the whole clips) every available backend
runs its forward and its forward + backward; times are medians after warm-up, ratios are
against the reference backend. Memory is measured in a fresh process per row (Linux): the peak
resident memory of one forward above the level with the inputs allocated, minus the output's
size (what the caller keeps anyway), next to the size of one input.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from sifa.tools.memory import peak_mib, reset_peak, rss_mib

SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))  # (channels, height = width)
CONV = "conv1x3x3"


@dataclass
class OpTimes:
    row: str  # a backend, or the convolution
    channels: int
    size: int
    forward_ms: float
    forward_backward_ms: float
    forward_extra_mib: float | None  # peak memory of a forward beyond inputs and output
    input_mib: float  # one input tensor (the query), for scale


def _median_ms(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _setup(row: str, channels: int, size: int, batch: int, frames: int):
    """``(forward, forward_backward, mib)`` of one row: its steps and the size of its input
    (the output has the same size)."""
    from sifa.ops import inter_frame_attention

    torch.manual_seed(0)
    pairs = batch * (frames - 1)
    if row == CONV:
        conv = torch.nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1), bias=False)
        x = torch.randn(batch, channels, frames, size, size, requires_grad=True)

        def forward():
            with torch.no_grad():
                return conv(x)

        def forward_backward():
            conv(x).sum().backward()

        return forward, forward_backward, x.numel() * 4 / 2**20
    query, key = (torch.randn(pairs, channels, size, size, requires_grad=True) for _ in "qk")
    offset = torch.randn(pairs, 18, size, size, requires_grad=True)

    def forward():
        with torch.no_grad():
            return inter_frame_attention(query, key, offset, scale="1/C", backend=row)

    def forward_backward():
        inter_frame_attention(query, key, offset, scale="1/C", backend=row).sum().backward()

    return forward, forward_backward, query.numel() * 4 / 2**20


def _memory(row, channels, size, batch, frames, threads, queue) -> None:
    torch.set_num_threads(threads)
    _setup(row, 4, 4, 1, 2)[0]()  # loads what the first call loads, allocates next to nothing
    forward, _, output_mib = _setup(row, channels, size, batch, frames)
    if not reset_peak():
        queue.put(None)
        return
    baseline = rss_mib()
    forward()
    queue.put(peak_mib() - baseline - output_mib)


def _extra_memory(row, channels, size, batch, frames, threads) -> float | None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_memory, args=(row, channels, size, batch, frames, threads, queue)
    )
    process.start()
    process.join()
    value = queue.get() if process.exitcode == 0 else None
    return None if value is None else max(0.0, value)


def benchmark_op(
    *,
    backends: list[str],
    batch: int = 8,
    frames: int = 4,
    shapes=SHAPES,
    warmup: int = 2,
    repeats: int = 5,
    threads: int = 2,
    memory: bool = True,
) -> list[OpTimes]:
    """Every backend in ``backends`` and the convolution at every ``(channels, size)``."""
    torch.set_num_threads(threads)
    results = []
    for channels, size in shapes:
        for row in (*backends, CONV):
            forward, forward_backward, input_mib = _setup(row, channels, size, batch, frames)
            results.append(
                OpTimes(
                    row=row,
                    channels=channels,
                    size=size,
                    forward_ms=_median_ms(forward, warmup, repeats),
                    forward_backward_ms=_median_ms(forward_backward, warmup, repeats),
                    forward_extra_mib=(
                        _extra_memory(row, channels, size, batch, frames, threads)
                        if memory
                        else None
                    ),
                    input_mib=input_mib,
                )
            )
    return results


def format_op_benchmark(results: list[OpTimes], setting: str) -> str:
    lines = [
        setting,
        "",
        "| C x H x W | row | forward ms | speed-up | fwd+bwd ms | speed-up "
        "| forward extra MiB | input MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    reference = {(r.channels, r.size): r for r in results if r.row == "reference"}

    def ratio(row: OpTimes, value: float, of: float | None) -> str:
        return f"{of / value:.1f}x" if of and row.row != "reference" else ""

    for r in results:
        base = reference.get((r.channels, r.size))
        extra = "n/a" if r.forward_extra_mib is None else f"{r.forward_extra_mib:.1f}"
        lines.append(
            f"| {r.channels} x {r.size} x {r.size} | {r.row} | {r.forward_ms:.1f} "
            f"| {ratio(r, r.forward_ms, base and base.forward_ms)} | {r.forward_backward_ms:.1f} "
            f"| {ratio(r, r.forward_backward_ms, base and base.forward_backward_ms)} | {extra} "
            f"| {r.input_mib:.1f} |"
        )
    return "\n".join(lines)


def as_dicts(results: list[OpTimes]) -> list[dict]:
    return [asdict(r) for r in results]
