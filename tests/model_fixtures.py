"""Helpers of the model tests: models whose every part shapes the output."""

from __future__ import annotations

import torch
from torch import nn


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with norms and running statistics moved off their initial
    values and every zero-initialised weight (offset convs, SIFA norms, temporal convs, GC
    blocks, last BN of residual blocks) made non-zero, so that every part shapes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm3d, nn.LayerNorm)):
                module.weight.uniform_(0.3, 0.7, generator=generator)
                module.bias.normal_(0, 0.05, generator=generator)
            if isinstance(module, nn.BatchNorm3d):
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.02, generator=generator)
    return model.eval()
