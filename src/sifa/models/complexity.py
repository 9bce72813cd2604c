"""Multiply-adds and parameters of a model, with ``torch.utils.flop_counter``.

The SIFA operator has its own registered count (``sifa.ops.library``): 6 multiply-adds per
channel and tap (4 for the bilinear sample, 1 for the score, 1 for the aggregation), whatever
backend runs it. Like the paper, the figures count multiply-adds of convolutions, linear
layers and the SIFA operator, not normalisation, activations or pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.utils.flop_counter as flop_counter
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sifa.models import create_model, model_entry
from sifa.models.swin import TemporalConv
from sifa.nn import InterFrameAttention


def _register_cpu_attention_formulas() -> None:
    """PyTorch counts no flops for its CPU flash attention kernel (the one
    ``scaled_dot_product_attention`` runs on CPU with a mask): count it as the other kernels."""
    aten = torch.ops.aten
    forward = aten._scaled_dot_product_flash_attention_for_cpu
    backward = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(forward)
        def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    if backward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(backward)
        def _backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                      **kwargs):  # fmt: skip
            return flop_counter.sdpa_backward_flop_count(
                grad_shape, query_shape, key_shape, value_shape
            )


_register_cpu_attention_formulas()


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
    frame_interval: int = 1  # step between the clip's frames in the video: costs nothing
    temporal_conv_gmacs: float = 0.0  # SIFA-Transformer's 3-tap temporal convs
    # Parameters of the parts added to the 2D network: "SIFA" (offset convs, output norms),
    # "temporal conv", "GC" (global context); zero counts are left out.
    added_params: dict[str, int] = field(default_factory=dict)


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

    def gmacs_of(kind: type[nn.Module]) -> float:
        return sum(gmacs(f"{root}.{n}") for n, m in model.named_modules() if isinstance(m, kind))

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
        parts={name: gmacs(f"{root}.{name}") for name in _part_names(model)},
        sifa_gmacs=gmacs_of(InterFrameAttention),
        sifa_op_gmacs=op_flops / 2e9,
        temporal_conv_gmacs=gmacs_of(TemporalConv),
        added_params=_added_params(model),
    )


_ADDED_PARTS = {"sifa": "SIFA", "sifa_norm": "SIFA", "temporal_conv": "temporal conv", "gc": "GC"}


def _added_params(model: nn.Module) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        part = next((_ADDED_PARTS[p] for p in name.split(".") if p in _ADDED_PARTS), None)
        if part is not None:
            counts[part] = counts.get(part, 0) + parameter.numel()
    return counts


def _part_names(model: nn.Module) -> list[str]:
    """Top-level children, with the members of a top-level ``ModuleList`` (Swin's stages,
    which the counter sees one by one) in its place."""
    names = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            names.extend(f"{name}.{index}" for index, _ in child.named_children())
        else:
            names.append(name)
    return names


def model_complexity(
    name: str, frames: int = 16, size: int = 224, frame_interval: int = 1, **switches
) -> Complexity:
    """:func:`measure_complexity` of a registered model, built on the meta device (instant).
    ``frame_interval`` only labels the result: sampling every n-th frame changes what a clip
    covers, not what it costs."""
    with torch.device("meta"):
        model = create_model(name, **switches)
    result = measure_complexity(model, frames, size)
    result.frame_interval = frame_interval
    return result


def _span(result: Complexity) -> str:
    if result.frame_interval == 1:
        return ""
    covered = (result.frames - 1) * result.frame_interval + 1
    return f", frames {result.frame_interval} apart: {covered} frames of video"


def format_complexity(name: str, result: Complexity, *, compare_with_paper: bool = True) -> str:
    """A short human-readable report, with the paper's figure where it gives one (pass
    ``compare_with_paper=False`` when the model was built with non-default switches)."""
    entry = model_entry(name)
    lines = [
        f"model        {name}" + (f"  [{entry.note}]" if entry.note else ""),
        f"input        1 x 3 x {result.frames} x {result.size} x {result.size} (one view)"
        + _span(result),
        f"GMACs/view   {result.gmacs:.2f}",
    ]
    paper = entry.paper.get("gmacs", {}).get(result.frames)
    if compare_with_paper and paper is not None and result.size == 224:
        lines[-1] += f"   (paper: {paper}, {100 * (result.gmacs / paper - 1):+.1f}%)"
    added = ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in result.added_params.items())
    added = f" (added: {added})" if added else ""
    lines.append(f"parameters   {result.params / 1e6:.2f} M{added}")
    parts = ", ".join(f"{k} {v:.2f}" for k, v in result.parts.items() if v > 0)
    lines.append(f"by part      {parts}")
    if result.sifa_gmacs:
        share = 100 * result.sifa_gmacs / result.gmacs
        lines.append(
            f"SIFA         {result.sifa_gmacs:.3f} GMACs ({share:.1f}%), of which the operator "
            f"{result.sifa_op_gmacs:.3f} and the offset convs the rest"
        )
    if result.temporal_conv_gmacs:
        share = 100 * result.temporal_conv_gmacs / result.gmacs
        lines.append(f"temporal conv {result.temporal_conv_gmacs:.3f} GMACs ({share:.1f}%)")
    return "\n".join(lines)
