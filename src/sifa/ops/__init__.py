"""The SIFA operator: ``inter_frame_attention`` and its registered ``torch.ops.sifa`` ops."""

from sifa.ops.functional import NORMALIZE_CHOICES, inter_frame_attention, resolve_scale

__all__ = ["NORMALIZE_CHOICES", "inter_frame_attention", "resolve_scale"]
