"""sifa: Stand-Alone Inter-Frame Attention for video recognition in PyTorch."""

from sifa import nn, ops
from sifa.nn import InterFrameAttention
from sifa.ops import inter_frame_attention

__version__ = "0.1.0"

__all__ = ["InterFrameAttention", "__version__", "inter_frame_attention", "nn", "ops"]
