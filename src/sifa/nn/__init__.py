"""Modules built on the SIFA operator, and the other layers of the video backbones."""

from sifa.nn.global_context import GlobalContext
from sifa.nn.inter_frame_attention import (
    MSM_CHOICES,
    OFFSET_INIT_CHOICES,
    OFFSETS_CHOICES,
    InterFrameAggregation,
    InterFrameAttention,
    Internals,
    motion_saliency,
)
from sifa.nn.temporal_shift import temporal_shift

__all__ = [
    "MSM_CHOICES",
    "OFFSETS_CHOICES",
    "OFFSET_INIT_CHOICES",
    "GlobalContext",
    "InterFrameAggregation",
    "InterFrameAttention",
    "Internals",
    "motion_saliency",
    "temporal_shift",
]
