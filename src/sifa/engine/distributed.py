"""Process-group set-up for ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs) and the collective
helpers the engine needs. A single process without ``torchrun`` is a group of one."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


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
        atexit.register(cleanup)  # a no-op when the command has cleaned up already
    return Distributed(rank, world_size, local_rank, chosen)


# Objects that hold a DistributedDataParallel wrapper (trainers), closed by :func:`cleanup`.
_holders: weakref.WeakSet = weakref.WeakSet()


def release_before_exit(holder) -> None:
    """Have :func:`cleanup` (at the latest at exit) call ``holder.close()``, which must drop
    every DistributedDataParallel wrapper ``holder`` keeps."""
    _holders.add(holder)


def cleanup() -> None:
    """Close the holders of DDP wrappers, free them and leave the process group.

    A process that exits with a gloo process group still open, or with a DDP wrapper still
    alive (its reducer keeps the group's worker threads), dies at interpreter shutdown with
    ``terminate called without an active exception`` (SIGABRT) in a good share of runs, after
    all its work is done: torchrun then reports the run as failed. ``sifa``'s commands call
    this when they end; :func:`setup` registers it to run at exit for Python code that does
    not."""
    for holder in list(_holders):
        holder.close()
    _holders.clear()
    gc.collect()  # a wrapper in a reference cycle would otherwise outlive the group
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


def parameters_without_gradient(
    model: nn.Module,
    clips_shape: Sequence[int],
    loss: Callable[[object, torch.Tensor], torch.Tensor],
) -> list[str]:
    """Names of the trainable parameters of ``model`` that the training loss cannot reach with
    clips of ``clips_shape`` ``(N, C, T, H, W)``, in ``named_parameters`` order.

    Without ``find_unused_parameters``, DDP waits at every update for a gradient of every
    trainable parameter, and stops with an error when one never comes: the offset conv of a
    SIFA block left with a single time step, which passes its clip through unchanged (the
    dual res5 branch of SIFA-Net at 8 frames; every SIFA block of SIFA-Transformer when the
    clip is one tubelet long). Which parameters the loss reaches depends on shapes only, so
    this is one forward (training mode) and backward of ``loss(model(clips), labels)`` on the
    ``meta`` device: tensors without data, no memory and next to no time. The model's
    parameters, buffers (BatchNorm statistics) and mode and the random number generators are
    left as they were. Raises what the model raises on meta tensors (a forward that reads
    values, a layer that needs real data such as SyncBatchNorm in a process group).
    """
    params = {
        name: torch.empty_like(p, device="meta").requires_grad_(p.requires_grad)
        for name, p in model.named_parameters()
    }
    buffers = {name: torch.empty_like(b, device="meta") for name, b in model.named_buffers()}
    clips = torch.empty(tuple(clips_shape), device="meta")
    labels = torch.zeros(clips.shape[0], dtype=torch.long, device="meta")
    modes = [(module, module.training) for module in model.modules()]
    model.train()
    try:
        output = functional_call(model, {**params, **buffers}, (clips,), strict=True)
        value = loss(output, labels)
    finally:
        for module, training in modes:
            module.training = training
    trainable = [(name, p) for name, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(value, [p for _, p in trainable], allow_unused=True)
    return [name for (name, _), grad in zip(trainable, grads, strict=True) if grad is None]


def ddp_parameters_without_gradient(
    group: Distributed,
    model: nn.Module,
    clips_shape: Sequence[int],
    loss: Callable[[object, torch.Tensor], torch.Tensor],
) -> list[str] | None:
    """:func:`parameters_without_gradient` for a DDP run, or ``None`` when the probe cannot run
    on ``model``: DDP must then search the graph for unused parameters at every update
    (``find_unused_parameters=True``), which the main process warns about, with the reason."""
    try:
        return parameters_without_gradient(model, clips_shape, loss)
    except Exception as error:  # any model code may fail on meta tensors
        if group.is_main:
            logger.warning(
                "cannot find the parameters that get no gradient with clips of shape %s "
                "(a shape-only probe on the meta device failed: %s: %s): DDP searches for "
                "unused parameters at every update (find_unused_parameters=True), which is "
                "slower",
                tuple(clips_shape),
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
        return None


def freeze_parameters(group: Distributed, model: nn.Module, names: list[str], frames: int) -> None:
    """``requires_grad_(False)`` on the parameters ``names`` of ``model`` (those of
    :func:`parameters_without_gradient` with clips of ``frames`` frames), so that DDP does not
    wait for their gradients; the main process logs them. Freeze them after building the
    optimiser: its parameter groups and state stay those of a single-process run (and of its
    checkpoints), where these parameters never get a gradient either, so that SGD and AdamW
    skip them (no update, no weight decay) in both."""
    if not names:
        return
    parameters = dict(model.named_parameters())
    for name in names:
        parameters[name].requires_grad_(False)
    if group.is_main:
        count = f"{len(names)} parameter{'s' if len(names) > 1 else ''}"
        verb = "get" if len(names) > 1 else "gets"
        logger.info(
            "%s %s no gradient with clips of %d frames: %s: frozen",
            count,
            verb,
            frames,
            ", ".join(names),
        )


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
