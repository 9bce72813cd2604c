"""Slow, obviously correct implementations written for the tests only.

Nothing here shares code with ``sifa``: positions, taps and the four bilinear corners are
explicit Python loops, and autograd flows through them, so they also give reference gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bilinear_sample(image: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Vector ``image[:, y, x]`` of a ``(C, H, W)`` image at a real position; corners outside
    the image contribute zero."""
    _, height, width = image.shape
    y0 = math.floor(float(torch.as_tensor(y).detach()))
    x0 = math.floor(float(torch.as_tensor(x).detach()))
    fy = y - y0
    fx = x - x0
    value = image.new_zeros(image.shape[0])
    for row, weight_y in ((y0, 1 - fy), (y0 + 1, fy)):
        for col, weight_x in ((x0, 1 - fx), (x0 + 1, fx)):
            if 0 <= row < height and 0 <= col < width:
                value = value + weight_y * weight_x * image[:, row, col]
    return value


def slow_inter_frame_attention(
    query, key, offset, kernel_size=3, dilation=1, groups=1, scale=None, normalize="none"
):
    batch, channels, height, width = query.shape
    k = kernel_size
    per_group = channels // groups
    if scale is None:
        scale = 1.0 / per_group
    centre = (k - 1) / 2
    images = []
    for b in range(batch):
        pixels = []
        for y in range(height):
            for x in range(width):
                samples = []
                for i in range(k):
                    for j in range(k):
                        n = i * k + j
                        sy = y + (i - centre) * dilation + offset[b, 2 * n, y, x]
                        sx = x + (j - centre) * dilation + offset[b, 2 * n + 1, y, x]
                        samples.append(bilinear_sample(key[b], sy, sx))
                parts = []
                for g in range(groups):
                    part = slice(g * per_group, (g + 1) * per_group)
                    q = query[b, part, y, x]
                    scores = [scale * torch.dot(q, v[part]) for v in samples]
                    if normalize == "softmax":
                        top = max(float(s.detach()) for s in scores)
                        exps = [torch.exp(s - top) for s in scores]
                        total = sum(exps)
                        scores = [e / total for e in exps]
                    parts.append(sum(s * v[part] for s, v in zip(scores, samples, strict=True)))
                pixels.append(torch.cat(parts))
        images.append(torch.stack(pixels, dim=1).view(channels, height, width))
    return torch.stack(images)


def regular_window_attention(query, key, kernel_size=3, dilation=1, scale=None):
    """Attention over a regular (undeformed) window, built on ``F.unfold``: an independent
    route to what zero offsets must give (one group, no normalisation)."""
    batch, channels, height, width = query.shape
    taps = kernel_size * kernel_size
    pad = dilation * (kernel_size - 1) // 2
    windows = F.unfold(key, kernel_size, dilation=dilation, padding=pad)
    windows = windows.view(batch, channels, taps, height, width)
    scale = 1.0 / channels if scale is None else scale
    scores = (query.unsqueeze(2) * windows).sum(1, keepdim=True) * scale
    return (scores * windows).sum(2)


def slow_attention_weights(
    query, key, offset, kernel_size=3, dilation=1, groups=1, scale=None, normalize="none"
):
    """``(B, G, k*k, H, W)``: the weight of every tap, position by position, as the operator
    defines it (scaled dot products per group, softmax over the taps when asked)."""
    batch, channels, height, width = query.shape
    k = kernel_size
    per_group = channels // groups
    scale = 1.0 / per_group if scale is None else scale
    centre = (k - 1) / 2
    weights = torch.zeros(batch, groups, k * k, height, width, dtype=query.dtype)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for n in range(k * k):
                    i, j = divmod(n, k)
                    sy = y + (i - centre) * dilation + offset[b, 2 * n, y, x]
                    sx = x + (j - centre) * dilation + offset[b, 2 * n + 1, y, x]
                    value = bilinear_sample(key[b], sy, sx)
                    for g in range(groups):
                        part = slice(g * per_group, (g + 1) * per_group)
                        weights[b, g, n, y, x] = scale * torch.dot(
                            query[b, part, y, x], value[part]
                        )
    if normalize == "softmax":
        weights = weights.softmax(dim=2)
    return weights
