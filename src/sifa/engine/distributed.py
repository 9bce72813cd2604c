"""Process-group set-up for ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs) and the collective
helpers the engine needs. A single process without ``torchrun`` is a group of one."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Distributed:
    """Join the process group ``torchrun`` describes in the environment, and pick the device
    (``auto``: this process's GPU when there is one, else the CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Distributed(rank, world_size, local_rank, chosen)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: Distributed) -> None:
    if group.enabled:
        dist.barrier()


def any_process(group: Distributed, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (e.g. a stop signal on one rank)."""
    if not group.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=group.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sum_over_processes(group: Distributed, *values: float) -> list[float]:
    """Element-wise sums of numbers over all processes."""
    if not group.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=group.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class ShardedSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every item on exactly one process, no padding (so
    that distributed evaluation counts each video once)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def gather_in_order(group: Distributed, indices: np.ndarray, *arrays: np.ndarray):
    """Concatenate every process's rows and sort them by ``indices`` (each row's item index)."""
    if group.enabled:
        parts = [None] * group.world_size
        dist.all_gather_object(parts, (indices, *arrays))
        indices = np.concatenate([p[0] for p in parts])
        arrays = tuple(np.concatenate([p[i + 1] for p in parts]) for i in range(len(arrays)))
    order = np.argsort(indices, kind="stable")
    return (indices[order], *(a[order] for a in arrays))
