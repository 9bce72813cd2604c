"""``sifa train --dry-run``: a run built as training builds it, a few updates timed, the run's
time estimated, and nothing written.

The run is a :class:`~sifa.engine.trainer.Trainer` made with ``dry_run=True``: the same
datasets, DataLoader (workers, pinning, shuffling), model, optimiser, schedule, precision,
autocast, GradScaler and accumulation as ``sifa train``, but ``output_dir`` is neither checked
nor written (it may hold a run, which stays as it was); the training state is thrown away.

Three phases are timed, in this order:

1. the loader alone: the training DataLoader iterated without a model. ``loader_startup_s`` is
   the time from starting the iteration to the first batch (worker processes starting and
   loading their first batches); the rate is measured after the first round of batches (one
   per worker) over whole rounds, since the workers deliver their batches in rounds;
2. real training steps: loader and model together, as the training loop runs them (mixing,
   autocast, scaled backward, the trainer's own optimiser step), timed after a first round of
   the loader, which also warms the model up;
3. the model alone: the same updates on batches already on the device, synchronised on CUDA.

The estimate rests on the real training steps, which are what training runs:

- ``update_s = clips_per_update / training_clips_per_s``
- ``train_epoch_s = updates_per_epoch * update_s``
- ``run_s = setup_s + loader_startup_s + epochs * train_epoch_s + validations * validation_s``

The loader and the model alone say which of the two limits the rate. Were they independent,
an update would take as long as the slower of the two (the loader's workers prepare the next
batches while the model computes), or with ``num_workers 0`` both times added up (the main
process loads, then computes): ``clips_per_update / min(loader, model)`` or
``clips_per_update * (1 / loader + 1 / model)``. When real steps run clearly slower than that
(below 80%: on a CPU, loader workers and the model share the cores), a note says so.

With ``data.cache_videos`` and ``num_workers 0`` (a small dataset decoded once and kept in
memory, like the demo's), only the first epoch decodes: the loader's rate on videos already in
memory is timed too (the clips of phase 1 read again), and an update of a later epoch is
estimated by that formula at the in-memory rate, times the real steps' time over the formula's
at the decoding rate: ``run_s = setup_s + loader_startup_s + train_epoch_s + (epochs - 1) *
cached_epoch_s + validation_s + (validations - 1) * cached_validation_s``. With loader workers
every worker decodes its own copy as it meets each video, so the estimate stays at the decoding
rate (an upper bound) and a note says so.

The phases print their progress on stderr (with ``progress``) as they go: on a CPU a paper
recipe's update can take minutes.
Validation (``data.val`` with ``eval_every``) is timed with
:func:`~sifa.engine.evaluate.score_videos` on the real multi-view validation set and the
configured workers: after an untimed warm-up batch, on ``a`` videos (one batch per worker) and
then ``b = 3a`` others, and extrapolated along the line through the two: ``validation_s = t_a +
(N - a) * (t_b - t_a) / (b - a)`` for ``N`` validation videos (``N * t_b / b`` if noise made
``t_b <= t_a``); a validation set too small for that is timed whole once. ``validations``
counts the epochs that end with one (every ``eval_every``-th and the last). Checkpoint saves
are not included.

A dry run measures one process: under ``torchrun`` it refuses, with how to extrapolate.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import math
import os
import sys
import textwrap
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from sifa.data.datasets import UnreadableVideo, VideoClipDataset
from sifa.data.loader import set_epoch
from sifa.engine import resources
from sifa.engine.config import ConfigError
from sifa.engine.evaluate import score_videos
from sifa.engine.trainer import Trainer, validates_after

DEFAULT_UPDATES = 5
LINE_WIDTH = 100  # of the table


@dataclass
class DryRunReport:
    """What a dry run measured and estimated: rates in clips per second, times in seconds,
    memory in MiB (``None``: not measured or not applicable here)."""

    output_dir: str
    device: str  # "cuda (NVIDIA H200)", "cpu (16 threads)"
    precision: str
    model: str
    parameters: int
    trainable_parameters: int
    train_videos: int
    val_videos: int | None  # None: no validation during training (no data.val, or eval_every 0)
    val_views: int | None  # clips x crops of each validation video
    batch_size: int
    accumulate: int
    clips_per_update: int  # batch_size x accumulate
    updates_per_epoch: int
    epochs: int
    num_workers: int
    setup_s: float  # building datasets, loader, model and optimiser
    loader_startup_s: float  # from starting the iteration to the first batch
    loader_batches: int  # batches timed for loader_clips_per_s
    loader_clips_per_s: float
    model_updates: int  # updates timed for model_clips_per_s
    model_clips_per_s: float
    limited_by: str  # "loader" or "model": the slower of the two
    training_updates: int  # real training steps timed for training_clips_per_s
    training_clips_per_s: float
    losses: list[float]  # every micro-batch's loss, in order
    loss_finite: bool
    main_peak_mib: float | None  # peak resident memory of the main process
    # Loader workers: the largest one's peak resident memory (counting the pages it still
    # shares with the main process it was forked from), and the memory they hold on their own
    # (not shared), together, at the end of the real training steps.
    worker_peak_mib: float | None
    workers_private_mib: float | None
    cuda_peak_allocated_mib: float | None  # training: tensors
    cuda_peak_reserved_mib: float | None  # training: held by PyTorch's caching allocator
    cuda_val_peak_allocated_mib: float | None  # validation: tensors
    cuda_total_mib: float | None  # the device's memory
    update_s: float
    train_epoch_s: float  # with cached videos: the first epoch, which decodes them
    validation_s: float | None  # one validation (with cached videos: the first)
    # data.cache_videos with num_workers 0: the loader's rate on videos already in memory, and
    # an epoch and a validation after the first (None otherwise)
    cached_loader_clips_per_s: float | None
    cached_epoch_s: float | None
    cached_validation_s: float | None
    validation_timings: list[list[float]]  # [videos, seconds] of each timed validation
    validations: int  # epochs that end with a validation
    run_s: float
    notes: list[str] = field(default_factory=list)


class _VideoRange:
    """Videos ``start .. stop - 1`` of an evaluation set, re-indexed from 0, as
    :func:`score_videos` reads a dataset."""

    def __init__(self, dataset: VideoClipDataset, start: int, stop: int) -> None:
        self.dataset, self.start, self.stop = dataset, start, stop
        self.num_classes = dataset.num_classes

    def __len__(self) -> int:
        return self.stop - self.start

    def evaluation_item(self, index: int):
        item = self.dataset.evaluation_item(self.start + index)
        if isinstance(item, UnreadableVideo):
            return dataclasses.replace(item, index=index)
        return item


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _endless(loader, start: int = 0) -> Iterator:
    """The loader's batches from batch ``start`` of the first epoch on, epoch after epoch (a
    small dataset may have fewer than needed)."""
    for epoch in itertools.count():
        set_epoch(loader, epoch)
        if epoch == 0:
            loader.sampler.set_start(start * loader.batch_size)
        yield from loader


def _round_up(value: int, step: int) -> int:
    return step * math.ceil(value / step)


def _workers_memory() -> tuple[float | None, float | None]:
    """The largest peak resident memory of one running child process (the loader's workers),
    and their private memory now, together; ``(None, None)`` without ``/proc``."""
    try:
        pids = resources.child_pids()
        peaks = [resources.peak_mib(pid) for pid in pids]
        private = sum(resources.private_mib(pid) for pid in pids)
    except OSError:
        return None, None
    return (max(peaks), private) if peaks else (None, None)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def _main_peak_mib() -> float | None:
    try:
        return resources.peak_mib()
    except OSError:  # no /proc: not Linux
        return None


class _Steps:
    """Updates exactly as :class:`Trainer` runs them (mixing, autocast, loss, scaled backward,
    its optimiser step), with every micro-batch's loss kept."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.losses: list[float] = []

    def micro_batch(self, clips: torch.Tensor, labels: torch.Tensor) -> None:
        # The trainer's own step; one process at epoch 0, micro-batches numbered in order.
        _, loss, _ = self.trainer._micro_batch(clips, labels, len(self.losses))
        self.losses.append(loss.item())

    def update(self, micro_batches: Iterator) -> None:
        for _ in range(self.trainer.config.optim.accumulate):
            self.micro_batch(*next(micro_batches))
        # The trainer's own step: gradient unscaling and clipping, GradScaler, schedule.
        self.trainer._step()


def _bar(description: str, total: int, unit: str, enabled: bool):
    """A progress bar on stderr for one phase (gone when the phase ends)."""
    return tqdm(total=total, desc=f"dry run: {description}", unit=unit, disable=not enabled,
                leave=False, dynamic_ncols=True)  # fmt: skip


def _time_loader(loader, batches: int, first_round: int, keep: int, progress: bool = False):
    """``(startup_s, clips_per_s, kept)``: the time to the first batch, then the rate over
    ``batches`` batches after the first ``first_round`` ones; ``kept``: the last ``keep``
    batches."""
    start = time.perf_counter()
    stream = _endless(loader)
    kept, clips, first = deque(maxlen=keep), 0, None
    bar = _bar("the loader alone", first_round + batches, "batch", progress)
    for index in range(first_round + batches):
        batch = next(stream)
        bar.update()
        now = time.perf_counter()
        if index == 0:
            first = now
        if index == first_round - 1:
            start_rate = now
        elif index >= first_round:
            clips += len(batch[1])
        kept.append(batch)
    stream.close()
    bar.close()
    return first - start, clips / max(now - start_rate, 1e-9), list(kept)


def _time_cached_loading(dataset: VideoClipDataset, loader_batches: int, batch: int) -> float:
    """Clips per second of ``dataset`` (``cache_videos`` on, read in this process) on videos
    already in memory: the clips it decoded so far read again (as many as ``loader_batches``
    batches hold, at most)."""
    indices = dataset.cached_indices()[: loader_batches * batch]
    if not indices:  # every video drawn so far was unreadable
        return math.nan
    begin = time.perf_counter()
    for start in range(0, len(indices), batch):
        torch.utils.data.default_collate([dataset[i] for i in indices[start : start + batch]])
    return len(indices) / max(time.perf_counter() - begin, 1e-9)


def _time_validation(
    trainer: Trainer, cached: bool = False
) -> tuple[float, float | None, list[list[float]]]:
    """One validation's estimated seconds, the same for a validation after the first with
    ``cached`` (videos in memory, read in this process), and the ``[videos, seconds]`` timings
    they rest on."""
    config, group = trainer.config, trainer.group
    dataset = trainer.val_set
    size = len(dataset)
    batch = config.data.val_batch_size
    workers = config.data.num_workers

    def timed(start: int, stop: int, num_workers: int = workers) -> float:
        _synchronize(group.device)
        begin = time.perf_counter()
        score_videos(
            trainer.model,
            _VideoRange(dataset, start, stop),
            group,
            batch_size=batch,
            num_workers=num_workers,
            precision=config.precision,
        )
        _synchronize(group.device)
        return time.perf_counter() - begin

    warm = min(batch, size)
    timed(0, warm, num_workers=0)  # the first eval-mode forwards (CUDA kernels, autotuning)
    small = batch * max(1, workers)  # one batch per worker
    large = 3 * small
    if size < warm + small + large:
        seconds = timed(0, size)
        again = timed(0, size) if cached else None  # now from memory
        return seconds, again, [[size, seconds]]
    t_small = timed(warm, warm + small)
    t_large = timed(warm + small, warm + small + large)
    timings = [[small, t_small], [large, t_large]]
    # Videos in memory: the larger part read again, scaled to the whole set.
    again = size * timed(warm + small, warm + small + large) / large if cached else None
    if t_large <= t_small:
        return size * t_large / large, again, timings
    return t_small + (size - small) * (t_large - t_small) / (large - small), again, timings


def validation_count(epochs: int, eval_every: int) -> int:
    """Epochs that end with a validation: every ``eval_every``-th and the last."""
    return sum(validates_after(epoch, epochs, eval_every) for epoch in range(1, epochs + 1))


def dry_run(
    config: DictConfig, *, updates: int = DEFAULT_UPDATES, progress: bool | None = None
) -> DryRunReport:
    """Build the run of ``config`` as :class:`Trainer` does, time the loader, real training
    steps and the model over a few updates (``updates`` timed in each, at least), time
    validation, and estimate the run (see the module's docstring for the formulas).
    ``progress`` (default: ``config.progress``) shows each phase's progress on stderr."""
    progress = config.progress if progress is None else progress
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise ConfigError(
            f"sifa train --dry-run measures one process, not {world_size}: run it without "
            f"torchrun. With N processes an epoch has about 1/N of the updates it reports, each "
            "about as long (plus the gradient all-reduce) if the machine has the CPU cores for "
            "N x data.num_workers loader workers: divide its epoch and run times by N"
        )
    if updates < 1:
        raise ValueError(f"--dry-run-updates must be at least 1, got {updates}")
    peak_reset = resources.reset_peak()
    if progress:
        print("dry run: building the run (datasets, loader, model, optimiser)", file=sys.stderr)
    begin = time.perf_counter()
    trainer = Trainer(config, dry_run=True)
    setup_s = time.perf_counter() - begin
    device = trainer.group.device
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    data, optim = config.data, config.optim
    accumulate, workers = optim.accumulate, data.num_workers
    clips_per_update = data.batch_size * accumulate
    steps = _Steps(trainer)
    trainer.model.train()

    # 1. The loader alone, over whole rounds of its workers.
    round_size = max(1, workers)
    loader_batches = _round_up(max(updates * accumulate, round_size), round_size)
    startup_s, loader_rate, kept = _time_loader(
        trainer.loader, loader_batches, round_size, accumulate, progress
    )
    # Videos decoded once and kept (in this process only: workers keep copies of their own).
    cached = bool(data.cache_videos) and workers == 0
    cached_rate = (
        _time_cached_loading(trainer.train_set, loader_batches, data.batch_size) if cached else None
    )

    # 2. Real training steps, timed after the loader's first round (which also warms the
    # model up), over whole rounds; on videos the loader has not read yet, as in an epoch (not
    # from the page cache, nor from data.cache_videos's memory).
    training_updates = _round_up(updates, round_size // math.gcd(round_size, accumulate))
    stream = _endless(trainer.loader, start=round_size + loader_batches)
    warm_up = math.ceil(round_size / accumulate)
    bar = _bar("real training steps", warm_up + training_updates, "update", progress)
    for _ in range(warm_up):
        steps.update(stream)
        bar.update()
    _synchronize(device)
    begin = time.perf_counter()
    for _ in range(training_updates):
        steps.update(stream)
        bar.update()
    _synchronize(device)
    training_rate = training_updates * clips_per_update / (time.perf_counter() - begin)
    stream.close()
    bar.close()
    worker_peak, workers_private = _workers_memory() if workers else (None, None)

    # 3. The model alone, on batches already on the device.
    kept = [tuple(t.to(device, non_blocking=True) for t in batch) for batch in kept]
    _synchronize(device)
    bar = _bar("the model alone", updates, "update", progress)
    begin = time.perf_counter()
    for _ in range(updates):
        steps.update(iter(kept))  # exactly one update's micro-batches
        bar.update()
    _synchronize(device)
    model_rate = updates * clips_per_update / (time.perf_counter() - begin)
    bar.close()
    del kept
    cuda_peaks: list[float | None] = [None, None, None, None]
    if on_cuda:
        cuda_peaks[:2] = [
            torch.cuda.max_memory_allocated(device) / 2**20,
            torch.cuda.max_memory_reserved(device) / 2**20,
        ]
        cuda_peaks[3] = torch.cuda.get_device_properties(device).total_memory / 2**20

    validation_s, cached_validation_s, timings = None, None, []
    if trainer.val_set is not None:
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        if progress:
            print("dry run: timing validation", file=sys.stderr)
        validation_s, cached_validation_s, timings = _time_validation(trainer, cached)
        if on_cuda:
            cuda_peaks[2] = torch.cuda.max_memory_allocated(device) / 2**20

    parameters = list(trainer.model.parameters())
    report = DryRunReport(
        output_dir=str(config.output_dir),
        device=_describe(device),
        precision=config.precision,
        model=config.model.name,
        parameters=sum(p.numel() for p in parameters),
        trainable_parameters=sum(p.numel() for p in parameters if p.requires_grad),
        train_videos=len(trainer.train_set),
        val_videos=len(trainer.val_set) if timings else None,
        val_views=data.val_clips * data.val_crops if timings else None,
        batch_size=data.batch_size,
        accumulate=accumulate,
        clips_per_update=clips_per_update,
        updates_per_epoch=trainer.updates_per_epoch,
        epochs=optim.epochs,
        num_workers=workers,
        setup_s=setup_s,
        loader_startup_s=startup_s,
        loader_batches=loader_batches,
        loader_clips_per_s=loader_rate,
        model_updates=updates,
        model_clips_per_s=model_rate,
        limited_by="loader" if loader_rate < model_rate else "model",
        training_updates=training_updates,
        training_clips_per_s=training_rate,
        losses=steps.losses,
        loss_finite=all(math.isfinite(loss) for loss in steps.losses),
        main_peak_mib=_main_peak_mib(),
        worker_peak_mib=worker_peak,
        workers_private_mib=workers_private,
        cuda_peak_allocated_mib=cuda_peaks[0],
        cuda_peak_reserved_mib=cuda_peaks[1],
        cuda_val_peak_allocated_mib=cuda_peaks[2],
        cuda_total_mib=cuda_peaks[3],
        update_s=0.0,
        train_epoch_s=0.0,
        validation_s=validation_s,
        cached_loader_clips_per_s=cached_rate,
        cached_epoch_s=None,
        cached_validation_s=cached_validation_s,
        validation_timings=timings,
        validations=validation_count(optim.epochs, config.eval_every) if timings else 0,
        run_s=0.0,
    )
    if data.cache_videos and workers:
        report.notes.append(
            "data.cache_videos with loader workers: each worker decodes and keeps its own copy "
            "of every video it meets, so epochs speed up as the copies fill; every epoch is "
            f"estimated at the decoding rate (an upper bound), and the workers hold up to "
            f"{workers} copies of the dataset in memory"
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not on_cuda and cores and workers >= cores:
        report.notes.append(
            f"data.num_workers={workers} on {cores} CPU cores: the loader's workers and the "
            f"model compete for them; num_workers {max(1, cores // 2)} or fewer may be faster "
            "here (the real steps above ran with these workers)"
        )
    if report.main_peak_mib is not None and not peak_reset:
        report.notes.append("the main process's peak memory counts from the process's start")
    skipped = trainer.train_set.skip_count
    if skipped:
        report.notes.append(
            f"{skipped} training clips came from another video than drawn: unreadable videos "
            "(sifa check-data lists them)"
        )
    # The persistent loader workers stop with their loader, the training state goes.
    del trainer, steps, stream, parameters
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    estimate(report)
    return report


def independent_update_s(report: DryRunReport, loader_rate: float) -> float:
    """An update's seconds were the loader (at ``loader_rate``) and the model independent:
    the slower of the two with loader workers, both added up with ``num_workers 0``."""
    if report.num_workers:
        return report.clips_per_update / min(loader_rate, report.model_clips_per_s)
    return report.clips_per_update * (1 / loader_rate + 1 / report.model_clips_per_s)


def estimate(report: DryRunReport) -> None:
    """Fill in ``update_s``, ``train_epoch_s`` and ``run_s`` from the real training steps (the
    module's docstring gives the formulas), and a note where real steps fall short of the
    loader and the model alone."""
    report.update_s = report.clips_per_update / report.training_clips_per_s
    report.train_epoch_s = report.updates_per_epoch * report.update_s
    later_epoch_s, later_validation_s = report.train_epoch_s, report.validation_s or 0.0
    if report.cached_loader_clips_per_s is not None and math.isfinite(
        report.cached_loader_clips_per_s
    ):
        # The real steps' slowdown over the independent formula, carried over to memory reads.
        # Never a speed-up: real steps faster than the formula mean a timing was disturbed (a
        # loader slowed by a busy machine), and a later epoch cannot beat the model alone.
        slowdown = max(
            1.0, report.update_s / independent_update_s(report, report.loader_clips_per_s)
        )
        report.cached_epoch_s = (
            report.updates_per_epoch
            * slowdown
            * independent_update_s(report, report.cached_loader_clips_per_s)
        )
        later_epoch_s = report.cached_epoch_s
    if report.cached_validation_s is not None:
        later_validation_s = report.cached_validation_s
    report.run_s = (
        report.setup_s
        + report.loader_startup_s
        + report.train_epoch_s
        + (report.epochs - 1) * later_epoch_s
        + min(report.validations, 1) * (report.validation_s or 0.0)
        + max(report.validations - 1, 0) * later_validation_s
    )
    share = training_share(report)
    if share < 0.8:
        cause = "on a CPU they share its cores" if report.num_workers else "a busy machine?"
        report.notes.append(
            f"real training steps ran at {100 * share:.0f}% of the rate the loader and the "
            f"model reach alone: here they slow each other down ({cause}); the estimate is at "
            "the rate of real steps"
        )
    elif share > 1.25:
        report.notes.append(
            f"real training steps ran at {100 * share:.0f}% of the rate the loader and the "
            "model reach alone: the timings disagree (a busy machine?); more --dry-run-updates "
            "steady them"
        )


def training_share(report: DryRunReport) -> float:
    """The rate of real training steps over the rate were the loader and the model
    independent."""
    independent = independent_update_s(report, report.loader_clips_per_s)
    return report.training_clips_per_s * independent / report.clips_per_update


def rate(clips_per_s: float) -> str:
    """A rate readable at any size: ``120 clips/s``, ``2.35 clips/s``, ``1 clip every 8.3 s``
    (not ``0.1 clips/s``)."""
    if not math.isfinite(clips_per_s) or clips_per_s <= 0:
        return f"{clips_per_s} clips/s"
    if clips_per_s >= 1:
        number = f"{clips_per_s:.3g}" if clips_per_s < 100 else f"{clips_per_s:.0f}"
        return f"{number} clip{'' if number == '1' else 's'}/s"
    return f"1 clip every {duration(1 / clips_per_s)}"


def duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``3 h 07 min``."""
    if seconds < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = round(seconds / 60) if seconds >= 3600 else int(seconds // 60)
    if seconds < 3600:
        return f"{minutes} min {round(seconds - 60 * minutes):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _mib(value: float) -> str:
    return f"{value / 1024:.2f} GiB" if value >= 1024 else f"{value:.0f} MiB"


def _count(value: int) -> str:
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value:,}"


def format_dry_run(report: DryRunReport) -> str:
    """The report as a short table of labelled lines."""
    r = report
    losses = f"{min(r.losses):.4g} to {max(r.losses):.4g}"
    loss = f"finite ({losses})" if r.loss_finite else f"NOT FINITE ({losses})"
    data = f"{r.train_videos:,} training videos"
    if r.val_videos is not None:
        views = f"{r.val_views} view" + ("s" if r.val_views > 1 else "")
        data += f", {r.val_videos:,} validation videos x {views}"
    else:
        data += ", no validation during training"
    other = "model" if r.limited_by == "loader" else "loader"
    workers = (
        f"{r.num_workers} worker{'s' if r.num_workers > 1 else ''}"
        if r.num_workers
        else "num_workers 0"
    )
    overlap = (
        "the workers load the next batches while the model computes"
        if r.num_workers
        else "num_workers 0: the main process loads, then computes"
    )
    memory_parts = []
    if r.cuda_peak_allocated_mib is not None:
        part = (
            f"CUDA peak {_mib(r.cuda_peak_allocated_mib)} allocated, "
            f"{_mib(r.cuda_peak_reserved_mib)} reserved of {_mib(r.cuda_total_mib)}"
        )
        if r.cuda_val_peak_allocated_mib is not None:
            part += f" (validation {_mib(r.cuda_val_peak_allocated_mib)})"
        memory_parts.append(part)
    if r.main_peak_mib is not None:
        memory_parts.append(f"main process peak {_mib(r.main_peak_mib)} resident")
    if r.worker_peak_mib is not None:
        memory_parts.append(
            f"loader workers: the largest peak {_mib(r.worker_peak_mib)} resident (with pages "
            f"shared with the main process), {_mib(r.workers_private_mib)} their own together"
        )
    if r.validation_s is not None:
        every = (
            "every epoch"
            if r.validations == r.epochs
            else f"after {r.validations} of the {r.epochs} epochs"
        )
        validation = f" + {duration(r.validation_s)} validation ({every})"
    else:
        validation = ""
    epoch = f"{duration(r.train_epoch_s)} training{validation}"
    if r.cached_epoch_s is not None:
        later = f"{duration(r.cached_epoch_s)} training"
        if r.cached_validation_s is not None:
            later += f" + {duration(r.cached_validation_s)} validation"
        epoch = (
            f"the first {epoch}, decoding the videos; later ones {later}, from memory "
            f"(data.cache_videos; loader {rate(r.cached_loader_clips_per_s)})"
        )
    rows = [
        ("device", f"{r.device}, precision {r.precision}"),
        ("model", f"{r.model}, {_count(r.parameters)} parameters "
                  f"({_count(r.trainable_parameters)} trainable); loss {loss}"),
        ("data", data),
        ("updates", f"{r.updates_per_epoch:,} per epoch x {r.epochs} epochs, "
                    f"{r.clips_per_update} clips each (batch {r.batch_size} x accumulate "
                    f"{r.accumulate})"),
        ("loader", f"{rate(r.loader_clips_per_s)} alone ({workers}, "
                   f"{r.loader_batches} batches); start-up {duration(r.loader_startup_s)}"),
        ("model", f"{rate(r.model_clips_per_s)} alone (forward, backward, step; "
                  f"{r.model_updates} updates)"),
        ("limit", f"the {r.limited_by}, the slower ({other}: "
                  f"{rate(max(r.loader_clips_per_s, r.model_clips_per_s))})"),
        ("training", f"{rate(r.training_clips_per_s)} in real steps "
                     f"({r.training_updates} updates, loader and model together; "
                     f"{100 * training_share(r):.0f}% of the rate they reach alone, {overlap})"),
        ("memory", "; ".join(memory_parts) or "not measured here"),
        ("update", f"{duration(r.update_s)} = {r.clips_per_update} clips at "
                   f"{rate(r.training_clips_per_s)}, the rate of real steps"),
        ("epoch", epoch),
        ("run", f"{duration(r.run_s)} for {r.epochs} epochs"
                + (f" and {r.validations} validations" if r.validations else "")
                + f", with set-up {duration(r.setup_s)}"),
    ]  # fmt: skip
    rows += [("note", note) for note in r.notes]
    width = max(len(label) for label, _ in rows)
    lines = [f"dry run: nothing written to {r.output_dir}, the training state thrown away"]
    for label, value in rows:
        wrapped = textwrap.wrap(value, LINE_WIDTH - width - 4, break_on_hyphens=False)
        lines.append(f"  {label:<{width}}  {wrapped[0]}")
        lines += [f"  {'':<{width}}  {more}" for more in wrapped[1:]]
    return "\n".join(lines)
