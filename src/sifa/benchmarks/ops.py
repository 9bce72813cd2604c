"""Side-by-side timing and memory of the SIFA operator's backends, and of a 1x3x3 convolution.

At the SIFA-Net shapes (``batch`` clips of ``frames`` frames: the operator sees the
``batch * (frames - 1)`` frame pairs, the convolution the whole clips) every available backend
runs its forward and its forward + backward; times are medians after warm-up, ratios are
against the reference backend. Forward memory is the peak above the level with the inputs
allocated, minus the output's size (what the caller keeps anyway), next to the size of one
input: on the CPU measured in a fresh process per row (Linux resident memory), on CUDA with
the allocator's peak counter.

Each forward is also set against the memory-bandwidth bound: the fewest bytes it must move
(every input read once, the output written once) over the bandwidth of a large device-to-device
copy measured in the same run (bytes read plus written).
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from sifa.engine.resources import peak_mib, reset_peak, rss_mib

SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))  # (channels, height = width)
CONV = "conv1x3x3"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class OpTimes:
    row: str  # a backend, or the convolution
    channels: int
    size: int
    forward_ms: float
    forward_backward_ms: float
    forward_extra_mib: float | None  # peak memory of a forward beyond inputs and output
    input_mib: float  # one input tensor (the query), for scale
    forward_min_mib: float  # fewest bytes a forward moves: inputs read once, output written once
    bound_ms: float  # forward_min_mib at the measured copy bandwidth


class _Clock:
    """Median wall time of a step; CUDA work is waited for before the clock is read."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def median_ms(self, step, warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            step()
        self.sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            self.sync()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)


def copy_bandwidth_gbs(device: torch.device, mib: int = 256, repeats: int = 5) -> float:
    """Bytes read plus bytes written per second by a large copy on ``device``, in GB/s."""
    source = torch.empty(mib * 2**20 // 4, device=device).uniform_()
    target = torch.empty_like(source)
    ms = _Clock(device).median_ms(lambda: target.copy_(source), 1, repeats)
    return 2 * source.numel() * 4 / (ms * 1e-3) / 1e9


def _setup(row, channels, size, batch, frames, device, dtype):
    """``(forward, forward_backward, input_mib, min_mib)`` of one row: its steps, the size of
    its input (the output has the same size) and the fewest bytes its forward moves."""
    from sifa.ops import inter_frame_attention

    torch.manual_seed(0)
    pairs = batch * (frames - 1)
    options = dict(device=device, dtype=dtype, requires_grad=True)
    bytes_per = torch.finfo(dtype).bits // 8
    if row == CONV:
        conv = torch.nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1), bias=False)
        conv = conv.to(device=device, dtype=dtype)
        x = torch.randn(batch, channels, frames, size, size, **options)

        def forward():
            with torch.no_grad():
                return conv(x)

        def forward_backward():
            conv(x).sum().backward()

        mib = x.numel() * bytes_per / 2**20
        return forward, forward_backward, mib, 2 * mib + conv.weight.numel() * bytes_per / 2**20
    query, key = (torch.randn(pairs, channels, size, size, **options) for _ in "qk")
    offset = torch.randn(pairs, 18, size, size, **options)

    def forward():
        with torch.no_grad():
            return inter_frame_attention(query, key, offset, scale="1/C", backend=row)

    def forward_backward():
        inter_frame_attention(query, key, offset, scale="1/C", backend=row).sum().backward()

    mib = query.numel() * bytes_per / 2**20
    return forward, forward_backward, mib, 3 * mib + offset.numel() * bytes_per / 2**20


def _cpu_memory(row, channels, size, batch, frames, threads, dtype, queue) -> None:
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    _setup(row, 4, 4, 1, 2, cpu, dtype)[0]()  # loads what the first call loads
    forward, _, output_mib, _ = _setup(row, channels, size, batch, frames, cpu, dtype)
    if not reset_peak():
        queue.put(None)
        return
    baseline = rss_mib()
    forward()
    queue.put(peak_mib() - baseline - output_mib)


def _extra_memory(row, channels, size, batch, frames, threads, device, dtype) -> float | None:
    if device.type == "cuda":
        forward, _, output_mib, _ = _setup(row, channels, size, batch, frames, device, dtype)
        forward()  # loads and compiles what the first call needs
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        forward()
        torch.cuda.synchronize()
        value = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20 - output_mib
        return max(0.0, value)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_cpu_memory, args=(row, channels, size, batch, frames, threads, dtype, queue)
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
    device: str = "cpu",
    dtype: str = "float32",
) -> list[OpTimes]:
    """Every backend in ``backends`` and the convolution at every ``(channels, size)``."""
    torch.set_num_threads(threads)
    device = torch.device(device)
    torch_dtype = DTYPES[dtype]
    clock = _Clock(device)
    bandwidth = copy_bandwidth_gbs(device)
    results = []
    for channels, size in shapes:
        for row in (*backends, CONV):
            forward, forward_backward, input_mib, min_mib = _setup(
                row, channels, size, batch, frames, device, torch_dtype
            )
            extra = None
            if memory:
                extra = _extra_memory(
                    row, channels, size, batch, frames, threads, device, torch_dtype
                )
            results.append(
                OpTimes(
                    row=row,
                    channels=channels,
                    size=size,
                    forward_ms=clock.median_ms(forward, warmup, repeats),
                    forward_backward_ms=clock.median_ms(forward_backward, warmup, repeats),
                    forward_extra_mib=extra,
                    input_mib=input_mib,
                    forward_min_mib=min_mib,
                    bound_ms=min_mib * 2**20 / (bandwidth * 1e9) * 1e3,
                )
            )
    return results


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"


def format_op_benchmark(results: list[OpTimes], setting: str) -> str:
    lines = [
        setting,
        "",
        "| C x H x W | row | forward ms | speed-up | fwd+bwd ms | speed-up "
        "| forward extra MiB | input MiB | forward moves MiB | x bandwidth bound |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    reference = {(r.channels, r.size): r for r in results if r.row == "reference"}

    def ratio(row: OpTimes, value: float, of: float | None) -> str:
        return f"{of / value:.1f}x" if of and row.row != "reference" else ""

    for r in results:
        base = reference.get((r.channels, r.size))
        extra = "n/a" if r.forward_extra_mib is None else f"{r.forward_extra_mib:.1f}"
        lines.append(
            f"| {r.channels} x {r.size} x {r.size} | {r.row} | {_ms(r.forward_ms)} "
            f"| {ratio(r, r.forward_ms, base and base.forward_ms)} "
            f"| {_ms(r.forward_backward_ms)} "
            f"| {ratio(r, r.forward_backward_ms, base and base.forward_backward_ms)} | {extra} "
            f"| {r.input_mib:.1f} | {r.forward_min_mib:.1f} | {r.forward_ms / r.bound_ms:.1f} |"
        )
    return "\n".join(lines)


def as_dicts(results: list[OpTimes]) -> list[dict]:
    return [asdict(r) for r in results]
