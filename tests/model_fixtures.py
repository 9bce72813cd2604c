"""Helpers of the model tests: models whose every part shapes the output."""

from __future__ import annotations

import torch
from torch import nn

from sifa.models import SwinVideo


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


def small_sifa_transformer(**switches) -> SwinVideo:
    """The first two stages of ``sifa_swin_t``: the same ``SwinVideo`` (width 96, 3 and 6 heads,
    two blocks a stage: a SIFA block and a shifted block with its temporal conv, patch merging
    between them), a third of Swin-T's blocks. At 32 pixels the first stage's 8 x 8 map is
    padded to whole windows and shifted, and the second's 4 x 4 map is smaller than the window:
    the paths Swin-T's four stages take at 64 pixels."""
    return SwinVideo(temporal="sifa", embed_dim=96, depths=(2, 2), num_heads=(3, 6), **switches)
