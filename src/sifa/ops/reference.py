"""Reference SIFA operator in plain PyTorch: the oracle every fast backend is tested against.

The deformed neighbourhood of every query is read from the next frame with one
``grid_sample`` call over a ``(k*k*H, W)`` grid of pixel positions, so the key is never
copied ``k*k`` times before sampling. It runs on any device and any float dtype; float16 and
bfloat16 are computed in float32 (the sampling grid would otherwise lose sub-pixel precision)
and returned in the input dtype.

Shapes: ``query`` and ``key`` are ``(B, C, H, W)``, ``offset`` is ``(B, 2*k*k, H, W)`` with
channel ``2n`` the vertical and ``2n+1`` the horizontal offset of tap ``n = i*k + j``, in pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

_BILINEAR = 0  # aten's interpolation_mode code for grid_sampler_2d
_ZEROS = 0  # aten's padding_mode code for grid_sampler_2d


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sampling_grid(offset: torch.Tensor, kernel_size: int, dilation: int) -> torch.Tensor:
    """Normalised ``grid_sample`` coordinates of every tap, shape ``(B, k*k*H, W, 2)``.

    Tap ``n = i*k + j`` of position ``(y, x)`` samples pixel
    ``(y + (i - (k-1)/2) * dilation + dy_n, x + (j - (k-1)/2) * dilation + dx_n)``.
    Coordinates are normalised for ``align_corners=False`` (``g = (2x + 1) / W - 1``), which
    maps pixel centres exactly for every size, ``W = 1`` included, and zero padding then gives
    the deformable-convolution convention: each bilinear corner outside the image adds zero.
    """
    batch, _, height, width = offset.shape
    taps = kernel_size * kernel_size
    offset = offset.reshape(batch, taps, 2, height, width)
    half = (kernel_size - 1) / 2
    steps = (torch.arange(kernel_size, dtype=offset.dtype, device=offset.device) - half) * dilation
    tap_y = steps.repeat_interleave(kernel_size)  # row i of tap n = i*k + j
    tap_x = steps.repeat(kernel_size)  # column j of tap n
    rows = torch.arange(height, dtype=offset.dtype, device=offset.device)
    cols = torch.arange(width, dtype=offset.dtype, device=offset.device)
    y = rows.view(1, 1, height, 1) + tap_y.view(1, taps, 1, 1) + offset[:, :, 0]
    x = cols.view(1, 1, 1, width) + tap_x.view(1, taps, 1, 1) + offset[:, :, 1]
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    return grid.reshape(batch, taps * height, width, 2)


def _sample(key: torch.Tensor, grid: torch.Tensor, groups: int, taps: int) -> torch.Tensor:
    """Sampled keys/values ``(B, G, C/G, k*k, H, W)``."""
    batch, channels, height, width = key.shape
    values = F.grid_sample(key, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return values.view(batch, groups, channels // groups, taps, height, width)


def _sample_backward(
    grad_values: torch.Tensor, key: torch.Tensor, grid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``grid_sample``'s own backward: gradients of the key and of the grid."""
    return torch.ops.aten.grid_sampler_2d_backward(
        grad_values, key, grid, _BILINEAR, _ZEROS, False, [True, True]
    )


def _attention_weights(
    query: torch.Tensor, values: torch.Tensor, scale: float, normalize: str
) -> torch.Tensor:
    """Per-tap weights ``(B, G, k*k, H, W)`` from query ``(B, G, C/G, H, W)``."""
    logits = torch.einsum("bgchw,bgckhw->bgkhw", query, values) * scale
    return logits.softmax(dim=2) if normalize == "softmax" else logits


def _grouped(tensor: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    batch, channels, height, width = tensor.shape
    return tensor.to(dtype).reshape(batch, groups, channels // groups, height, width)


class _Attention(NamedTuple):
    """What forward and backward both compute, in the compute dtype."""

    key: torch.Tensor  # (B, C, H, W)
    grid: torch.Tensor  # (B, k*k*H, W, 2)
    query: torch.Tensor  # (B, G, C/G, H, W)
    values: torch.Tensor  # (B, G, C/G, k*k, H, W)
    weights: torch.Tensor  # (B, G, k*k, H, W)


def _poison(grid: torch.Tensor, taps: int) -> torch.Tensor:
    """``(B, k*k, H, W)``: 0 for a tap whose normalised sampling position is finite, NaN for
    one that is not (a NaN or infinite offset, or one so large that the grid overflows).

    ``grid_sample`` on the CPU gives such a tap NaN bilinear weights, so its sample is NaN;
    on CUDA it moves the position outside the image instead (a sample of 0). Adding this to
    the samples (and to the offset gradient) makes the rule the same on every device."""
    batch, rows, width, _ = grid.shape
    return (grid * 0).sum(-1).view(batch, taps, rows // taps, width)


def _attend(query, key, offset, kernel_size, dilation, groups, scale, normalize) -> _Attention:
    dtype = compute_dtype(query.dtype)
    grid = sampling_grid(offset.to(dtype), kernel_size, dilation)
    key = key.to(dtype)
    taps = kernel_size * kernel_size
    values = _sample(key, grid, groups, taps) + _poison(grid, taps).unsqueeze(1).unsqueeze(1)
    query = _grouped(query, groups, dtype)
    return _Attention(key, grid, query, values, _attention_weights(query, values, scale, normalize))


def attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: int,
    dilation: int,
    groups: int,
    scale: float,
    normalize: str,
) -> torch.Tensor:
    """The weight of every tap, ``(B, G, k*k, H, W)`` in the compute dtype: the scaled scores,
    softmax-normalised over the taps with ``normalize="softmax"`` (what the output sums the
    sampled values with; for pictures of what SIFA attends to)."""
    return _attend(query, key, offset, kernel_size, dilation, groups, scale, normalize).weights


def forward(
    query: torch.Tensor,
    key: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: int,
    dilation: int,
    groups: int,
    scale: float,
    normalize: str,
) -> torch.Tensor:
    """Inter-frame attention of ``query`` over the deformed neighbourhoods in ``key``."""
    a = _attend(query, key, offset, kernel_size, dilation, groups, scale, normalize)
    out = torch.einsum("bgkhw,bgckhw->bgchw", a.weights, a.values)
    # Contiguous output: the op's fake implementation promises it.
    return out.reshape(query.shape).to(query.dtype).contiguous()


def backward(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: int,
    dilation: int,
    groups: int,
    scale: float,
    normalize: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(grad_query, grad_key, grad_offset)`` of :func:`forward`, written out by hand.

    With ``z_n = scale * <q, v_n>``, ``a = z`` or ``softmax(z)`` and ``out = sum_n a_n v_n``:
    ``dL/da_n = <g, v_n>``; ``dL/dz`` through the softmax Jacobian when normalised;
    ``dL/dq = scale * sum_n dL/dz_n v_n``; ``dL/dv_n = a_n g + scale * dL/dz_n q``; and the
    gradients of key and offset come from ``grid_sample``'s own backward.
    """
    batch, channels, height, width = query.shape
    taps = kernel_size * kernel_size
    a = _attend(query, key, offset, kernel_size, dilation, groups, scale, normalize)
    values, weights = a.values, a.weights
    grad_g = _grouped(grad_out, groups, a.values.dtype)

    grad_weights = torch.einsum("bgchw,bgckhw->bgkhw", grad_g, values)
    if normalize == "softmax":
        grad_weights = weights * (grad_weights - (weights * grad_weights).sum(2, keepdim=True))
    grad_logits = grad_weights * scale
    grad_query = torch.einsum("bgkhw,bgckhw->bgchw", grad_logits, values)
    grad_values = torch.einsum("bgkhw,bgchw->bgckhw", weights, grad_g) + torch.einsum(
        "bgkhw,bgchw->bgckhw", grad_logits, a.query
    )

    grad_key, grad_grid = _sample_backward(
        grad_values.reshape(batch, channels, taps * height, width), a.key, a.grid
    )
    # d(normalised coordinate)/d(pixel) is 2/W horizontally and 2/H vertically.
    grad_grid = grad_grid.view(batch, taps, height, width, 2)
    grad_offset = torch.stack(
        (grad_grid[..., 1] * (2 / height), grad_grid[..., 0] * (2 / width)), 2
    ) + _poison(a.grid, taps).unsqueeze(2)
    return (
        grad_query.reshape(query.shape).to(query.dtype).contiguous(),
        grad_key.to(key.dtype).contiguous(),
        grad_offset.reshape(offset.shape).to(offset.dtype).contiguous(),
    )
