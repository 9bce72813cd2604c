"""DataLoader set-up: shuffling that can be replayed per epoch, seeded workers."""

from __future__ import annotations

import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def seed_worker(worker_id: int) -> None:
    """Worker start-up: seed Python's and numpy's RNGs from torch's per-worker seed (for code
    that uses them; the project's own data code draws from torch only), and leave Ctrl-C to the
    main process, which saves a checkpoint and then stops the workers itself. SIGTERM gets its
    default action back: the handler a worker inherits from the ``sifa`` command is the main
    process's."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` that can start an epoch part-way, at the ``start``-th
    index of this process's order for that epoch (to resume an interrupted epoch exactly)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    num_replicas: int = 1,
    rank: int = 0,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader whose order depends only on ``seed`` and the epoch (see :func:`set_epoch`).

    Shuffling uses a :class:`ResumableSampler` (``num_replicas=1`` for one process), which
    permutes with ``seed + epoch``; workers are persistent, seeded by :func:`seed_worker`, and
    memory is pinned when CUDA is available.
    """
    sampler = ResumableSampler(
        dataset,
        num_replicas=num_replicas,
        rank=rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make the next pass over ``loader`` epoch ``epoch``: its order and the dataset's random
    sampling and augmentation. Call it before iterating."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
