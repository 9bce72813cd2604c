"""Side-by-side timing of models: one training step and one inference step, with peak memory.

Every model runs in a fresh process, so its peak resident memory is its own; times are the
median over the repeats after warm-up. Ratios are against the first model given, or against
the ``c2d_*`` model when one is in the list.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class StepTimes:
    model: str
    train_s: float  # median seconds of forward + loss + backward + SGD step
    infer_s: float  # median seconds of an eval-mode forward without autograd
    train_peak_mib: float  # peak resident memory above the process's level before the steps
    infer_peak_mib: float
    gmacs: float  # multiply-adds of one clip's forward


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _median_seconds(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(name: str, batch: int, frames: int, size: int, warmup: int, repeats: int,
             threads: int | None) -> StepTimes:  # fmt: skip
    from sifa.models import classification_loss, create_model
    from sifa.tools.flops import model_complexity

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, num_classes=400)
    clips = torch.randn(batch, 3, frames, size, size)
    labels = torch.randint(0, 400, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    baseline = _rss_mib()

    def infer():
        with torch.no_grad():
            model(clips)

    def train():
        loss = classification_loss(model(clips), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # Inference first: its peak is below training's, and the peak counter only grows.
    model.eval()
    infer_s = _median_seconds(infer, warmup, repeats)
    infer_peak = _peak_rss_mib() - baseline
    model.train()
    train_s = _median_seconds(train, warmup, repeats)
    train_peak = _peak_rss_mib() - baseline
    gmacs = model_complexity(name, frames, size).gmacs * batch
    return StepTimes(name, train_s, infer_s, train_peak, infer_peak, gmacs)


def _child(queue, args) -> None:
    try:
        queue.put(asdict(_measure(*args)))
    except BaseException as error:  # report to the parent instead of dying silently
        queue.put({"error": f"{type(error).__name__}: {error}"})


def benchmark_models(
    names: list[str],
    *,
    batch: int = 2,
    frames: int = 16,
    size: int = 112,
    warmup: int = 1,
    repeats: int = 5,
    threads: int | None = None,
) -> list[StepTimes]:
    """Time every model in its own process, one after the other."""
    context = multiprocessing.get_context("spawn")
    results = []
    for name in names:
        queue = context.Queue()
        process = context.Process(
            target=_child, args=(queue, (name, batch, frames, size, warmup, repeats, threads))
        )
        process.start()
        report = queue.get()
        process.join()
        if "error" in report:
            raise ValueError(f"benchmark of {name} failed: {report['error']}")
        results.append(StepTimes(**report))
    return results


def format_benchmark(results: list[StepTimes], setting: str) -> str:
    """A Markdown table with the ratios against the baseline model."""
    baseline = next((r for r in results if r.model.startswith("c2d_")), results[0])
    lines = [
        f"{setting}; ratios against {baseline.model}",
        "",
        "| model | GMACs | train step (s) | ratio | inference (s) | ratio "
        "| train peak (MiB) | inference peak (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.gmacs:.2f} | {r.train_s:.3f} | {r.train_s / baseline.train_s:.2f} "
            f"| {r.infer_s:.3f} | {r.infer_s / baseline.infer_s:.2f} "
            f"| {r.train_peak_mib:.0f} | {r.infer_peak_mib:.0f} |"
        )
    return "\n".join(lines)
