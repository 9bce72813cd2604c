"""Run the SIFA operator and the SIFA block on random data and check what they promise.

python examples/quickstart.py
"""

import torch

import sifa
from sifa.ops import inter_frame_attention

torch.manual_seed(0)

# The operator: frame t (query) attends to deformed 3x3 neighbourhoods of frame t+1 (key).
query, key = torch.randn(2, 64, 14, 14), torch.randn(2, 64, 14, 14)
offset = torch.randn(2, 2 * 3 * 3, 14, 14)  # (dy, dx) per tap, in pixels
out = inter_frame_attention(query, key, offset, kernel_size=3, normalize="softmax")
print(f"operator: query {tuple(query.shape)} -> {tuple(out.shape)}")

# The block: the whole SIFA step on a clip (N, C, T, H, W), trainable offsets included.
block = sifa.InterFrameAttention(64, msm="official", offset_init="zero")
clip = torch.randn(2, 64, 4, 14, 14, requires_grad=True)
fused = block(clip)
fused.sum().backward()
print(f"block:    clip {tuple(clip.shape)} -> {tuple(fused.shape)}")
print(f"          last frame unchanged: {torch.equal(fused[:, :, -1], clip[:, :, -1])}")
print(f"          offset conv receives gradient: {bool(block.offset_conv.weight.grad.abs().sum())}")
print(f"          {sum(p.numel() for p in block.parameters())} learned weights (the offset conv)")
