"""Global-context channel vector added to a block's output (SPEC section 2, GC bottleneck)."""

from __future__ import annotations

import torch
from torch import nn


class GlobalContext(nn.Module):
    """``x + MLP(mean_{T,H,W} x)`` for clips ``(N, C, T, H, W)``.

    The MLP is ``Linear(C, C/reduction) -> ReLU -> Linear(C/reduction, C)``, both with bias.
    The second layer starts at zero (as in GCNet), so the block starts as the identity and an
    inflated ImageNet network is unchanged by it at initialisation.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3, 4)))))
        return x + context[:, :, None, None, None]
