"""Public functional API of the SIFA operator: argument checks, then the registered op."""

from __future__ import annotations

import math
import numbers

import torch

from sifa.ops import library  # noqa: F401  (registers torch.ops.sifa.*)
from sifa.ops.backends import check_backend

NORMALIZE_CHOICES = ("none", "softmax")
SCALE_CHOICES = ("1/C", "1/sqrt(C)")


def check_positive_int(name: str, value, *, odd: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1 or (odd and value % 2 == 0):
        kind = "a positive odd integer" if odd else "a positive integer"
        raise ValueError(f"{name} must be {kind}, got {value}")


def resolve_scale(scale, channels_per_group: int) -> float:
    """The score scale as a float.

    ``None`` or ``"1/C"`` give ``1 / channels_per_group`` (the released code), ``"1/sqrt(C)"``
    gives ``1 / sqrt(channels_per_group)`` (dot-product attention); a number is used as given.
    """
    if scale is None or (isinstance(scale, str) and scale == "1/C"):
        return 1.0 / channels_per_group
    if isinstance(scale, str):
        if scale == "1/sqrt(C)":
            return 1.0 / math.sqrt(channels_per_group)
        raise ValueError(f"scale must be None, a number or one of {SCALE_CHOICES}, got {scale!r}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(
            f"scale must be None, a number or one of {SCALE_CHOICES}, "
            f"got {type(scale).__name__} {scale!r}"
        )
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def check_normalize(normalize) -> None:
    if not isinstance(normalize, str):
        raise TypeError(f"normalize must be a str in {NORMALIZE_CHOICES}, got {normalize!r}")
    if normalize not in NORMALIZE_CHOICES:
        raise ValueError(f"normalize must be one of {NORMALIZE_CHOICES}, got {normalize!r}")


def _check_tensor(name: str, tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 4:
        raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {tensor.dtype}")


def _check_inputs(query, key, offset, kernel_size: int, groups: int) -> None:
    for name, tensor in (("query", query), ("key", key), ("offset", offset)):
        _check_tensor(name, tensor)
    for name, tensor in (("key", key), ("offset", offset)):
        if tensor.dtype != query.dtype:
            raise TypeError(f"{name} dtype {tensor.dtype} must equal query dtype {query.dtype}")
        if tensor.device != query.device:
            raise ValueError(f"{name} is on {tensor.device} but query is on {query.device}")
    batch, channels, height, width = query.shape
    if channels < 1 or height < 1 or width < 1:
        raise ValueError(
            f"query must have at least 1 channel, row and column, got shape {tuple(query.shape)}"
        )
    if tuple(key.shape) != tuple(query.shape):
        raise ValueError(
            f"key shape {tuple(key.shape)} must equal query shape {tuple(query.shape)} "
            "(same batch, channels, height and width)"
        )
    expected = (batch, 2 * kernel_size * kernel_size, height, width)
    if tuple(offset.shape) != expected:
        raise ValueError(
            f"offset must have shape (B, 2*kernel_size**2, H, W) = {expected} for query shape "
            f"{tuple(query.shape)} and kernel_size={kernel_size}, got {tuple(offset.shape)}"
        )
    if channels % groups != 0:
        raise ValueError(f"groups={groups} must divide the {channels} channels of query")


def inter_frame_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    offset: torch.Tensor,
    *,
    kernel_size: int = 3,
    dilation: int = 1,
    groups: int = 1,
    scale: float | str | None = None,
    normalize: str = "none",
    backend: str = "auto",
) -> torch.Tensor:
    """Stand-alone inter-frame attention (SPEC section 1, steps 3-6).

    Every position ``p`` of ``query`` (frame ``t``) attends to a ``kernel_size x kernel_size``
    neighbourhood of ``key`` (frame ``t+1``), dilated by ``dilation`` and deformed by ``offset``:
    tap ``n = i*k + j`` samples ``key`` bilinearly at
    ``p + ((i - (k-1)/2) * dilation, (j - (k-1)/2) * dilation) + (dy_n(p), dx_n(p))``
    (corners outside the image contribute zero). The score of a tap is
    ``scale * <query(p), sample_n(p)>`` per channel group, optionally softmax-normalised over
    the taps, and the output is the score-weighted sum of the samples.

    Args:
        query: ``(B, C, H, W)`` features of frame ``t``.
        key: ``(B, C, H, W)`` features of frame ``t+1``; keys and values are its samples.
        offset: ``(B, 2*k*k, H, W)``; channel ``2n`` is ``dy`` and ``2n+1`` is ``dx`` of tap
            ``n``, in pixels.
        kernel_size: odd neighbourhood size ``k``.
        dilation: spacing of the regular taps, in pixels.
        groups: channel groups ``G``; each scores and aggregates its ``C/G`` channels on its
            own, and all share the offsets.
        scale: ``None`` or ``"1/C"`` for ``1/(C/G)`` (the released code), ``"1/sqrt(C)"`` for
            ``1/sqrt(C/G)``, or a number used as given.
        normalize: ``"none"`` (raw scaled dot products, the released code) or ``"softmax"``
            over the ``k*k`` taps.

    Returns:
        ``(B, C, H, W)`` tensor, the aggregated values, in the dtype of ``query``.

    Differentiable with respect to ``query``, ``key`` and ``offset`` (first order).
    """
    check_positive_int("kernel_size", kernel_size, odd=True)
    check_positive_int("dilation", dilation)
    check_positive_int("groups", groups)
    check_normalize(normalize)
    check_backend(backend)
    _check_inputs(query, key, offset, kernel_size, groups)
    scale_value = resolve_scale(scale, query.shape[1] // groups)
    return torch.ops.sifa.inter_frame_attention(
        query, key, offset, kernel_size, dilation, groups, scale_value, normalize, backend
    )
