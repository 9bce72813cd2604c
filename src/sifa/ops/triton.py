"""Triton backend: fused GPU kernels for the SIFA operator (:mod:`sifa.ops.triton_kernels`).

Runs on CUDA tensors where Triton is installed (it comes with PyTorch's CUDA builds), and on
CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set before the first call),
which is how the tests check it on machines without a GPU. float32, float16 and bfloat16
compute in float32, float64 in float64; results come back in the input dtype.

The forward reads every input once, keeps the softmax online (one pass over the taps) and
writes only the output: no ``(k*k, C, H, W)`` buffer exists. The backward recomputes the
forward per pixel and accumulates the key gradient with relaxed float atomics. When PyTorch's
deterministic mode is on (``torch.use_deterministic_algorithms(True)``) it does without
atomics: the kernel records where every bilinear corner lands, the corners are sorted by
target pixel, and one program per key pixel sums its contributions in that fixed order
(a few times slower, bit-for-bit repeatable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from sifa.ops.reference import compute_dtype

INTERPRET_ENV = "TRITON_INTERPRET"
_state: dict[str, object] = {}


def _kernels():
    """The kernel module, or ``None`` when Triton cannot be imported (see :func:`failure`)."""
    if "module" not in _state:
        try:
            from sifa.ops import triton_kernels
        except Exception as error:  # not installed, or an install that does not import
            _state["module"] = None
            _state["failure"] = f"triton cannot be imported ({type(error).__name__}: {error})"
        else:
            _state["module"] = triton_kernels
            _state["interpreted"] = os.environ.get(INTERPRET_ENV) == "1"
    return _state["module"]


def failure() -> str | None:
    """Why Triton is unusable here (``None`` if it imported or was not tried yet)."""
    return _state.get("failure")  # type: ignore[return-value]


def unavailable_reason(device: torch.device) -> str | None:
    """Why the backend cannot run on ``device`` (``None``: it can)."""
    if device.type not in ("cuda", "cpu"):
        return f"it runs on CUDA tensors, these are on {device.type}"
    if device.type == "cpu" and os.environ.get(INTERPRET_ENV) != "1":
        return f"it runs on CUDA tensors (CPU tensors only with {INTERPRET_ENV}=1)"
    if _kernels() is None:
        return failure()
    interpreted = bool(_state["interpreted"])
    if device.type == "cpu" and not interpreted:
        return f"{INTERPRET_ENV}=1 was set after the kernels were compiled for the GPU"
    if device.type == "cuda" and interpreted:
        return f"the kernels were loaded for the interpreter ({INTERPRET_ENV}=1)"
    return None


def _tl_dtype(dtype: torch.dtype):
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


@dataclass(frozen=True)
class Launch:
    """One kernel launch, built before it runs: :func:`forward` and :func:`backward` run
    them, and :mod:`sifa.benchmarks.kernels` compiles exactly these for a GPU it need not
    have (same arguments, so the same specialisation)."""

    name: str
    kernel: Any  # a triton.JITFunction
    grid: tuple[int, ...]
    args: tuple
    constants: dict[str, Any]

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.constants, **LAUNCH_OPTIONS)


# Multiply-adds fused (FMA), as Triton has always done; said explicitly because Triton 3.9
# warns that its default will change, and the tolerances of the tests assume fusion.
LAUNCH_OPTIONS = {"enable_fp_fusion": True}


def _blocks(channels_per_group: int, pixels: int, budget: int) -> tuple[int, int]:
    """Tile ``(BLOCK_C, BLOCK_P)``: the whole channel group, and as many pixels as fit in
    ``budget`` elements (at least one, at most the image rounded up to a power of two)."""
    import triton

    block_c = triton.next_power_of_2(channels_per_group)
    block_p = max(1, budget // block_c)
    return block_c, min(block_p, triton.next_power_of_2(pixels))


# Elements of one (BLOCK_C, BLOCK_P) tile. The forward keeps about 3 such tiles live, the
# backward about 8. At these budgets 4 warps hold them in registers without spilling at every
# SIFA-Net shape, float32 and bfloat16, on sm_90 (`sifa benchmark kernels` shows registers and
# spills; the former floor of 16 pixels per tile spilled kilobytes per thread at 256 and 512
# channels).
_FORWARD_TILE = 2048
_BACKWARD_TILE = 1024


def _contiguous_planes(*tensors: torch.Tensor) -> bool:
    """Every ``(H, W)`` plane of every tensor is one contiguous block."""
    return all(t.stride(-1) == 1 and t.stride(-2) == t.shape[-1] for t in tensors)


def _scale_tensor(scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # A tensor, not a kernel argument: Triton passes Python floats as float32.
    return torch.full((1,), scale, dtype=dtype, device=device)


def _channels_last(key: torch.Tensor) -> torch.Tensor:
    """The key with unit channel stride: each sampled corner is then one contiguous vector."""
    return key if key.stride(1) == 1 else key.contiguous(memory_format=torch.channels_last)


def forward_launch(query, key, offset, out, kernel_size, dilation, groups, scale, normalize):
    """The forward kernel's launch (``key`` channels-last, ``out`` like ``query``)."""
    batch, channels, height, width = query.shape
    acc = compute_dtype(query.dtype)
    cg = channels // groups
    block_c, block_p = _blocks(cg, height * width, _FORWARD_TILE)
    return Launch(
        "forward",
        _kernels().forward_kernel,
        (-(-height * width // block_p), batch * groups),
        (
            query, key, offset, out, _scale_tensor(scale, acc, query.device),
            *query.stride(), *key.stride(), *offset.stride(), *out.stride(),
            height, width, height * width, cg, groups, dilation,
        ),
        dict(
            KS=kernel_size, SOFTMAX=normalize == "softmax",
            PLANES=_contiguous_planes(query, offset, out), BLOCK_C=block_c, BLOCK_P=block_p,
            ACC=_tl_dtype(acc),
        ),
    )  # fmt: skip


def forward(query, key, offset, kernel_size, dilation, groups, scale, normalize):
    key = _channels_last(key)
    out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    if out.numel() > 0:
        forward_launch(query, key, offset, out, kernel_size, dilation, groups, scale, normalize)()
    return out


@dataclass
class BackwardBuffers:
    """What the backward kernel writes: the gradients (key and offset in the accumulation
    dtype, the key's channels-last) and, in deterministic mode, the per-tap weights and logit
    gradients and where each bilinear corner lands, with its weight."""

    grad_query: torch.Tensor
    grad_key: torch.Tensor  # (B, H, W, C): a corner's adds hit one contiguous channel vector
    grad_offset: torch.Tensor
    attn: torch.Tensor
    grad_logit: torch.Tensor
    corner_index: torch.Tensor
    corner_weight: torch.Tensor

    @classmethod
    def allocate(cls, query, offset, kernel_size, groups, deterministic):
        batch, channels, height, width = query.shape
        device = query.device
        acc = compute_dtype(query.dtype)
        taps, pixels = kernel_size * kernel_size, height * width
        grad_key = torch.zeros(batch, height, width, channels, dtype=acc, device=device)
        if deterministic:
            attn = torch.empty(batch, groups, taps, pixels, dtype=acc, device=device)
            grad_logit = torch.empty_like(attn)
            index = torch.empty(batch, taps, 4, pixels, dtype=torch.int32, device=device)
            weight = torch.empty(batch, taps, 4, pixels, dtype=acc, device=device)
        else:  # unused by the kernel in this mode
            attn = grad_logit = weight = grad_key
            index = torch.empty(1, dtype=torch.int32, device=device)
        return cls(
            torch.empty(query.shape, dtype=query.dtype, device=device),
            grad_key,
            torch.zeros(offset.shape, dtype=acc, device=device),
            attn, grad_logit, index, weight,
        )  # fmt: skip


def backward_launch(grad_out, query, key, offset, buffers, kernel_size, dilation, groups, scale,
                    normalize, deterministic):  # fmt: skip
    """The backward kernel's launch (``key`` channels-last)."""
    batch, channels, height, width = query.shape
    acc = compute_dtype(query.dtype)
    cg = channels // groups
    block_c, block_p = _blocks(cg, height * width, _BACKWARD_TILE)
    b = buffers
    return Launch(
        "backward",
        _kernels().backward_kernel,
        (-(-height * width // block_p), batch),
        (
            grad_out, query, key, offset, b.grad_query, b.grad_key, b.grad_offset,
            _scale_tensor(scale, acc, query.device), b.attn, b.grad_logit, b.corner_index,
            b.corner_weight,
            *grad_out.stride(), *query.stride(), *key.stride(), *offset.stride(),
            height, width, height * width, cg, groups, dilation,
        ),
        dict(
            KS=kernel_size, SOFTMAX=normalize == "softmax", DETERMINISTIC=deterministic,
            PLANES=_contiguous_planes(grad_out, query, offset), BLOCK_C=block_c,
            BLOCK_P=block_p, ACC=_tl_dtype(acc),
        ),
    )  # fmt: skip


def backward(grad_out, query, key, offset, kernel_size, dilation, groups, scale, normalize):
    key = _channels_last(key)
    deterministic = torch.are_deterministic_algorithms_enabled()
    buffers = BackwardBuffers.allocate(query, offset, kernel_size, groups, deterministic)
    if query.numel() == 0:
        return (
            buffers.grad_query,
            torch.zeros_like(key, memory_format=torch.contiguous_format),
            buffers.grad_offset.to(offset.dtype),
        )
    backward_launch(grad_out, query, key, offset, buffers, kernel_size, dilation, groups, scale,
                    normalize, deterministic)()  # fmt: skip
    if deterministic:
        rowptr, order = _sort_corners(buffers.corner_index)
        gather_launch(rowptr, order, buffers, grad_out, query, groups)()
    grad_key = buffers.grad_key.permute(0, 3, 1, 2).to(key.dtype).contiguous()
    return buffers.grad_query, grad_key, buffers.grad_offset.to(offset.dtype)


def _sort_corners(corner_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic key gradient, first half: the corners sorted by the key pixel they land
    on (a stable sort, so the order is the same every run); ``rowptr[t] : rowptr[t + 1]`` are
    the sorted entries of key pixel ``t`` (over ``B * H * W``), corners outside come last."""
    batch, _, _, pixels = corner_index.shape
    device = corner_index.device
    batch_start = torch.arange(batch, device=device).view(batch, 1, 1, 1) * pixels
    outside = batch * pixels  # sorts after every real pixel
    target = torch.where(corner_index >= 0, corner_index + batch_start, outside).flatten()
    sorted_target, order = torch.sort(target, stable=True)
    rowptr = torch.searchsorted(sorted_target, torch.arange(batch * pixels + 1, device=device))
    return rowptr, order


def gather_launch(rowptr, order, buffers, grad_out, query, groups):
    """Deterministic key gradient, second half: one program per key pixel sums its sorted
    list of corners."""
    batch, channels, height, width = query.shape
    b = buffers
    block_c = min(128, _blocks(channels, 1, 0)[0])
    return Launch(
        "gather_key_grad",
        _kernels().gather_key_grad_kernel,
        (batch * height * width, -(-channels // block_c)),
        (
            rowptr, order, b.corner_weight, b.attn, b.grad_logit, grad_out, query, b.grad_key,
            *grad_out.stride(), *query.stride(),
            height, width, channels, channels // groups, groups, b.corner_index.shape[1],
        ),
        dict(BLOCK_C=block_c, ACC=_tl_dtype(b.grad_key.dtype)),
    )  # fmt: skip
