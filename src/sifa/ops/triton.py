"""Triton backend: fused GPU kernels for the SIFA operator (:mod:`sifa.ops.triton_kernels`).

Runs on CUDA tensors where Triton is installed (it comes with PyTorch's CUDA builds), and on
CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set before the first call),
which is how the tests check it on machines without a GPU. float32, float16 and bfloat16
compute in float32, float64 in float64; results come back in the input dtype.

The forward reads every input once, keeps the softmax online (one pass over the taps) and
writes only the output: no ``(k*k, C, H, W)`` buffer exists. The backward recomputes the
forward per pixel and accumulates the key gradient with float atomics. When PyTorch's
deterministic mode is on (``torch.use_deterministic_algorithms(True)``) it does without
atomics: the kernel records where every bilinear corner lands, the corners are sorted by
target pixel, and one program per key pixel sums its contributions in that fixed order
(a few times slower, bit-for-bit repeatable).
"""

from __future__ import annotations

import os

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


def _blocks(channels_per_group: int, pixels: int, budget: int) -> tuple[int, int]:
    """Tile ``(BLOCK_C, BLOCK_P)``: the whole channel group, and pixels up to ``budget``
    elements (at least 16 pixels, at most the image rounded up to a power of two)."""
    import triton

    block_c = triton.next_power_of_2(channels_per_group)
    block_p = max(16, budget // block_c)
    return block_c, min(block_p, max(16, triton.next_power_of_2(pixels)))


# Elements of one (BLOCK_C, BLOCK_P) tile: forward and backward keep about 3 and 8 such tiles
# live, and 4 warps hold them in registers without spilling at these sizes.
_FORWARD_TILE = 2048
_BACKWARD_TILE = 1024


def _scale_tensor(scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # A tensor, not a kernel argument: Triton passes Python floats as float32.
    return torch.full((1,), scale, dtype=dtype, device=device)


def _channels_last(key: torch.Tensor) -> torch.Tensor:
    """The key with unit channel stride: each sampled corner is then one contiguous vector."""
    return key if key.stride(1) == 1 else key.contiguous(memory_format=torch.channels_last)


def forward(query, key, offset, kernel_size, dilation, groups, scale, normalize):
    kernels = _kernels()
    key = _channels_last(key)
    batch, channels, height, width = query.shape
    out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    if out.numel() == 0:
        return out
    acc = compute_dtype(query.dtype)
    cg = channels // groups
    block_c, block_p = _blocks(cg, height * width, _FORWARD_TILE)
    grid = (-(-height * width // block_p), batch * groups)
    kernels.forward_kernel[grid](
        query, key, offset, out, _scale_tensor(scale, acc, query.device),
        *query.stride(), *key.stride(), *offset.stride(), *out.stride(),
        height, width, cg, groups, dilation,
        KS=kernel_size, SOFTMAX=normalize == "softmax", BLOCK_C=block_c, BLOCK_P=block_p,
        ACC=_tl_dtype(acc),
    )  # fmt: skip
    return out


def backward(grad_out, query, key, offset, kernel_size, dilation, groups, scale, normalize):
    kernels = _kernels()
    batch, channels, height, width = query.shape
    device = query.device
    acc = compute_dtype(query.dtype)
    key = _channels_last(key)
    grad_query = torch.empty(query.shape, dtype=query.dtype, device=device)
    # Channels-last (B, H, W, C): the atomics of one corner hit one contiguous channel vector.
    grad_key = torch.zeros(batch, height, width, channels, dtype=acc, device=device)
    grad_offset = torch.zeros(offset.shape, dtype=acc, device=device)
    if grad_query.numel() == 0:
        return (
            grad_query,
            torch.zeros_like(key, memory_format=torch.contiguous_format),
            (grad_offset.to(offset.dtype)),
        )
    taps = kernel_size * kernel_size
    pixels = height * width
    cg = channels // groups
    deterministic = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        attn = torch.empty(batch, groups, taps, pixels, dtype=acc, device=device)
        grad_logit = torch.empty_like(attn)
        corner_index = torch.empty(batch, taps, 4, pixels, dtype=torch.int32, device=device)
        corner_weight = torch.empty(batch, taps, 4, pixels, dtype=acc, device=device)
    else:
        attn = grad_logit = corner_weight = grad_key  # unused by the kernel in this mode
        corner_index = torch.empty(1, dtype=torch.int32, device=device)
    block_c, block_p = _blocks(cg, pixels, _BACKWARD_TILE)
    kernels.backward_kernel[(-(-pixels // block_p), batch)](
        grad_out, query, key, offset, grad_query, grad_key, grad_offset,
        _scale_tensor(scale, acc, device), attn, grad_logit, corner_index, corner_weight,
        *grad_out.stride(), *query.stride(), *key.stride(), *offset.stride(),
        height, width, cg, groups, dilation,
        KS=kernel_size, SOFTMAX=normalize == "softmax", DETERMINISTIC=deterministic,
        BLOCK_C=block_c, BLOCK_P=block_p, ACC=_tl_dtype(acc),
    )  # fmt: skip
    if deterministic:
        _gather_key_grad(kernels, grad_key, corner_index, corner_weight, attn, grad_logit,
                         grad_out, query, groups)  # fmt: skip
    grad_key = grad_key.permute(0, 3, 1, 2).to(key.dtype).contiguous()
    return grad_query, grad_key, grad_offset.to(offset.dtype)


def _gather_key_grad(kernels, grad_key, corner_index, corner_weight, attn, grad_logit,
                     grad_out, query, groups):  # fmt: skip
    """Deterministic key gradient: sort the corners by the key pixel they land on (a stable
    sort, so the order is the same every run) and sum each pixel's list in one program."""
    batch, channels, height, width = query.shape
    pixels = height * width
    batch_start = torch.arange(batch, device=query.device).view(batch, 1, 1, 1) * pixels
    outside = batch * pixels  # sorts after every real pixel
    target = torch.where(corner_index >= 0, corner_index + batch_start, outside).flatten()
    sorted_target, order = torch.sort(target, stable=True)
    rowptr = torch.searchsorted(
        sorted_target, torch.arange(batch * pixels + 1, device=query.device)
    )
    block_c = min(128, _blocks(channels, 1, 0)[0])
    grid = (batch * pixels, -(-channels // block_c))
    kernels.gather_key_grad_kernel[grid](
        rowptr, order, corner_weight, attn, grad_logit, grad_out, query, grad_key,
        *grad_out.stride(), *query.stride(),
        height, width, channels, channels // groups, groups, corner_index.shape[1],
        BLOCK_C=block_c, ACC=_tl_dtype(grad_key.dtype),
    )  # fmt: skip
