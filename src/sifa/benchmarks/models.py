"""Side-by-side timing of models: one training step and one inference step, with peak memory.

The models' steps are timed in one fresh process, taking turns step by step (model A, model B,
model A, ...), so that the machine's speed changing during the run (a shared machine, CPU
frequency) affects every model alike; times are medians over the repeats after warm-up. Each
model's peak resident memory is measured in a fresh process of its own (on CUDA: the
allocator's peak, above the level with the model built). Each model's ratios are against the
per-frame network of its family when it is in the list (``c2d_*`` for SIFA-Net and TSM,
``swin_*`` for SIFA-Transformer), else against the first model given. ``precision``
``"bfloat16"`` or ``"float16"`` runs the steps under autocast, as ``sifa train`` does.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from dataclasses import dataclass

import torch

from sifa.engine.resources import peak_mib, reset_peak, rss_mib


@dataclass
class StepTimes:
    model: str
    train_s: float  # median seconds of forward + loss + backward + SGD step
    infer_s: float  # median seconds of an eval-mode forward without autograd
    train_peak_mib: float  # peak resident memory above the process's level before the steps
    infer_peak_mib: float
    gmacs: float  # multiply-adds of one clip's forward


class _Steps:
    """One model with its clip, labels and optimiser: a training step and an inference step."""

    def __init__(self, name, batch, frames, size, device="cpu", precision="float32") -> None:
        from sifa.models import create_model

        torch.manual_seed(0)
        self.device = torch.device(device)
        self.model = create_model(name, num_classes=400).to(self.device)
        self.clips = torch.randn(batch, 3, frames, size, size, device=self.device)
        self.labels = torch.randint(0, 400, (batch,), device=self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.autocast = torch.autocast(
            self.device.type,
            dtype=getattr(torch, precision) if precision != "float32" else None,
            enabled=precision != "float32",
        )

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def infer(self) -> None:
        self.model.eval()
        with torch.no_grad(), self.autocast:
            self.model(self.clips)

    def train(self) -> None:
        from sifa.models import classification_loss

        self.model.train()
        with self.autocast:
            loss = classification_loss(self.model(self.clips), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def _timed(steps: _Steps, kind: str) -> float:
    steps.sync()
    start = time.perf_counter()
    getattr(steps, kind)()
    steps.sync()
    return time.perf_counter() - start


def _measure_times(names, batch, frames, size, warmup, repeats, threads, device, precision):
    """Median seconds per model and step, the models taking turns step by step, so that a
    change in the machine's speed during the run affects them alike."""
    if threads:
        torch.set_num_threads(threads)
    steps = {name: _Steps(name, batch, frames, size, device, precision) for name in names}
    times = {name: {"infer": [], "train": []} for name in names}
    for kind in ("infer", "train"):
        for _ in range(warmup):
            for name in names:
                getattr(steps[name], kind)()
        for _ in range(repeats):
            for name in names:
                times[name][kind].append(_timed(steps[name], kind))
    return {
        name: {kind: statistics.median(values) for kind, values in by_kind.items()}
        for name, by_kind in times.items()
    }


def _measure_memory(name, batch, frames, size, threads, device, precision) -> dict:
    """Peak resident memory of one inference step, then of one training step (the optimiser's
    state included), above the level with the model built, in this fresh process."""
    if threads:
        torch.set_num_threads(threads)
    steps = _Steps(name, batch, frames, size, device, precision)
    if steps.device.type == "cuda":
        return _measure_cuda_memory(steps)
    reset_peak()
    baseline = rss_mib()
    # Inference first: its peak is below training's, and the peak counter only grows.
    steps.infer()
    infer_peak = peak_mib() - baseline
    steps.train()
    steps.train()
    return {"infer": infer_peak, "train": peak_mib() - baseline}


def _measure_cuda_memory(steps: _Steps) -> dict:
    mib = 2**20
    baseline = torch.cuda.memory_allocated(steps.device)
    torch.cuda.reset_peak_memory_stats(steps.device)
    steps.infer()
    infer_peak = (torch.cuda.max_memory_allocated(steps.device) - baseline) / mib
    steps.train()
    steps.train()
    train_peak = (torch.cuda.max_memory_allocated(steps.device) - baseline) / mib
    return {"infer": infer_peak, "train": train_peak}


def _child(queue, function, args) -> None:
    try:
        queue.put(function(*args))
    except BaseException as error:  # report to the parent instead of dying silently
        queue.put({"error": f"{type(error).__name__}: {error}"})


def _in_fresh_process(function, args, what: str):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, function, args))
    process.start()
    report = queue.get()
    process.join()
    if "error" in report:
        raise ValueError(f"benchmark of {what} failed: {report['error']}")
    return report


def benchmark_models(
    names: list[str],
    *,
    batch: int = 2,
    frames: int = 16,
    size: int = 112,
    warmup: int = 1,
    repeats: int = 5,
    threads: int | None = None,
    device: str = "cpu",
    precision: str = "float32",
) -> list[StepTimes]:
    """Time the models' steps taking turns in one fresh process; measure each model's peak
    memory in a fresh process of its own."""
    from sifa.models.complexity import model_complexity

    memory = {
        name: _in_fresh_process(
            _measure_memory, (name, batch, frames, size, threads, device, precision), name
        )
        for name in names
    }
    times = _in_fresh_process(
        _measure_times,
        (list(names), batch, frames, size, warmup, repeats, threads, device, precision),
        ", ".join(names),
    )
    return [
        StepTimes(
            model=name,
            train_s=times[name]["train"],
            infer_s=times[name]["infer"],
            train_peak_mib=memory[name]["train"],
            infer_peak_mib=memory[name]["infer"],
            gmacs=model_complexity(name, frames, size).gmacs * batch,
        )
        for name in names
    ]


def baseline_of(name: str, names: list[str]) -> str:
    """The model ``name``'s ratios are taken against: the per-frame network of its family
    (``c2d_resnet50`` for ``sifa_resnet50`` and ``tsm_resnet50``, ``swin_t`` for
    ``sifa_swin_t``) when it is in ``names``, else the first of ``names``."""
    stem = name.removeprefix("sifa_").removeprefix("tsm_").removeprefix("c2d_")
    family = f"c2d_{stem}" if stem.startswith("resnet") else stem
    return family if family in names else names[0]


def format_benchmark(results: list[StepTimes], setting: str) -> str:
    """A Markdown table with every model's ratios against its :func:`baseline_of`."""
    names = [r.model for r in results]
    by_name = {r.model: r for r in results}
    baselines = list(dict.fromkeys(baseline_of(n, names) for n in names))
    lines = [
        f"{setting}; ratios against {', '.join(baselines)}",
        "",
        "| model | GMACs | train step (s) | ratio | inference (s) | ratio "
        "| train peak (MiB) | inference peak (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        baseline = by_name[baseline_of(r.model, names)]
        lines.append(
            f"| {r.model} | {r.gmacs:.2f} | {r.train_s:.3f} | {r.train_s / baseline.train_s:.2f} "
            f"| {r.infer_s:.3f} | {r.infer_s / baseline.infer_s:.2f} "
            f"| {r.train_peak_mib:.0f} | {r.infer_peak_mib:.0f} |"
        )
    return "\n".join(lines)
