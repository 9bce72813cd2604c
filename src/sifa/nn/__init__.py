"""Modules built on the SIFA operator."""

from sifa.nn.inter_frame_attention import (
    MSM_CHOICES,
    OFFSET_INIT_CHOICES,
    InterFrameAttention,
    motion_saliency,
)

__all__ = ["MSM_CHOICES", "OFFSET_INIT_CHOICES", "InterFrameAttention", "motion_saliency"]
