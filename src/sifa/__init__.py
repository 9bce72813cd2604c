"""sifa: Stand-Alone Inter-Frame Attention for video recognition in PyTorch."""

from sifa import models, nn, ops
from sifa.models import create_model, list_models
from sifa.nn import InterFrameAttention
from sifa.ops import inter_frame_attention

__version__ = "0.1.0"

__all__ = [
    "InterFrameAttention",
    "__version__",
    "create_model",
    "inter_frame_attention",
    "list_models",
    "models",
    "nn",
    "ops",
]
