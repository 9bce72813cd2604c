"""Multiply-adds and parameters of a model, with ``torch.utils.flop_counter``.

The SIFA operator has its own registered count (``sifa.ops.library``): 6 multiply-adds per
channel and tap (4 for the bilinear sample, 1 for the score, 1 for the aggregation), whatever
backend runs it. Like the paper, the figures count multiply-adds of convolutions, linear
layers and the SIFA operator, not normalisation, activations or pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sifa.models import create_model, model_entry
from sifa.nn import InterFrameAttention


@dataclass
class Complexity:
    """Cost of one view (one clip) in multiply-adds (GMACs, 1e9) and parameters."""

    frames: int
    size: int
    gmacs: float
    params: int
    parts: dict[str, float] = field(default_factory=dict)  # GMACs per top-level child
    sifa_gmacs: float = 0.0  # SIFA modules: offset convs and the operator
    sifa_op_gmacs: float = 0.0  # the operator alone


def measure_complexity(model: nn.Module, frames: int, size: int) -> Complexity:
    """Count one eval-mode forward of a ``(1, 3, frames, size, size)`` clip on ``model``'s
    device (``meta`` works and computes nothing)."""
    parameter = next(model.parameters())
    clip = torch.zeros(1, 3, frames, size, size, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(clip)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def gmacs(module_name: str) -> float:
        return sum(counts.get(module_name, {}).values()) / 2e9

    sifa_names = [
        f"{root}.{n}" for n, m in model.named_modules() if isinstance(m, InterFrameAttention)
    ]
    op_flops = sum(
        flops
        for op, flops in counts.get("Global", {}).items()
        if str(op).startswith("sifa.inter_frame_attention")
    )
    return Complexity(
        frames=frames,
        size=size,
        gmacs=counter.get_total_flops() / 2e9,
        params=sum(p.numel() for p in model.parameters()),
        parts={name: gmacs(f"{root}.{name}") for name, _ in model.named_children()},
        sifa_gmacs=sum(gmacs(n) for n in sifa_names),
        sifa_op_gmacs=op_flops / 2e9,
    )


def model_complexity(name: str, frames: int = 16, size: int = 224, **switches) -> Complexity:
    """:func:`measure_complexity` of a registered model, built on the meta device (instant)."""
    with torch.device("meta"):
        model = create_model(name, **switches)
    return measure_complexity(model, frames, size)


def format_complexity(name: str, result: Complexity, *, compare_with_paper: bool = True) -> str:
    """A short human-readable report, with the paper's figure where it gives one (pass
    ``compare_with_paper=False`` when the model was built with non-default switches)."""
    entry = model_entry(name)
    lines = [
        f"model        {name}" + (f"  [{entry.note}]" if entry.note else ""),
        f"input        1 x 3 x {result.frames} x {result.size} x {result.size} (one view)",
        f"GMACs/view   {result.gmacs:.2f}",
    ]
    paper = entry.paper.get("gmacs", {}).get(result.frames)
    if compare_with_paper and paper is not None and result.size == 224:
        lines[-1] += f"   (paper: {paper}, {100 * (result.gmacs / paper - 1):+.1f}%)"
    lines.append(f"parameters   {result.params / 1e6:.2f} M")
    parts = ", ".join(f"{k} {v:.2f}" for k, v in result.parts.items() if v > 0)
    lines.append(f"by part      {parts}")
    if result.sifa_gmacs:
        share = 100 * result.sifa_gmacs / result.gmacs
        lines.append(
            f"SIFA         {result.sifa_gmacs:.3f} GMACs ({share:.1f}%), of which the operator "
            f"{result.sifa_op_gmacs:.3f} and the offset convs the rest"
        )
    return "\n".join(lines)
