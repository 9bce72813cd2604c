"""Temporal shift (TSM, Lin et al. 2019), the baseline SIFA is compared against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def temporal_shift(x: torch.Tensor, shift_div: int = 8) -> torch.Tensor:
    """Shift ``C/shift_div`` channels of clips ``(N, C, T, H, W)`` one frame each way in time.

    Channels ``[0, C/d)`` of frame ``t`` take frame ``t+1``'s values, channels ``[C/d, 2C/d)``
    take frame ``t-1``'s, the rest stay; frames shifted in from outside the clip are zero.
    """
    fold = x.shape[1] // shift_div
    from_next = F.pad(x[:, :fold, 1:], (0, 0, 0, 0, 0, 1))
    from_previous = F.pad(x[:, fold : 2 * fold, :-1], (0, 0, 0, 0, 1, 0))
    return torch.cat((from_next, from_previous, x[:, 2 * fold :]), dim=1)
