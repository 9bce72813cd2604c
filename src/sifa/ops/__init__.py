"""The SIFA operator: ``inter_frame_attention``, its registered ``torch.ops.sifa`` ops and the
backends behind them."""

from sifa.ops.backends import BACKENDS, BackendUnavailableError, backend_report, select_backend
from sifa.ops.functional import NORMALIZE_CHOICES, inter_frame_attention, resolve_scale
from sifa.ops.library import decompositions

__all__ = [
    "BACKENDS",
    "NORMALIZE_CHOICES",
    "BackendUnavailableError",
    "backend_report",
    "decompositions",
    "inter_frame_attention",
    "resolve_scale",
    "select_backend",
]
