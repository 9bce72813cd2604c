"""Checks of model switches and input clips, and the SIFA block's switches, shared by the
model families."""

from __future__ import annotations

import numbers

import torch


def check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_rate(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def check_clips(x, frames_multiple: int, multiple_name: str) -> None:
    """``x`` is a batch of RGB clips ``(N, 3, T, H, W)`` with ``T`` a positive multiple of
    ``frames_multiple`` (the switch ``multiple_name``), or a ValueError says what is wrong."""
    if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected RGB clips (N, 3, T, H, W), got {shape}")
    frames = x.shape[2]
    if frames < frames_multiple or frames % frames_multiple:
        raise ValueError(
            f"clip length T={frames} must be a positive multiple of "
            f"{multiple_name}={frames_multiple}"
        )


def sifa_block_options(
    *, offsets, msm, offset_init, scale, normalize, sifa_kernel_size, sifa_dilation, sifa_groups
) -> dict:
    """:class:`sifa.nn.InterFrameAttention` keyword arguments from a model builder's SIFA
    switches (the operator's switches carry a ``sifa_`` prefix there)."""
    return dict(
        offsets=offsets,
        kernel_size=sifa_kernel_size,
        dilation=sifa_dilation,
        groups=sifa_groups,
        scale=scale,
        normalize=normalize,
        msm=msm,
        offset_init=offset_init,
    )
