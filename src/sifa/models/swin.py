"""SIFA-Transformer and its per-frame Swin baselines, as in SPEC section 3.

A 2D Swin Transformer runs on every time step of a clip: a ``Conv3d`` tubelet embedding of
kernel and stride ``(tubelet_size, patch_size, patch_size)`` (``(4, 4, 4)`` by default: 64 input
frames become 16 time steps of 56 x 56 tokens at 224 pixels), then four stages of window
attention with the time axis folded into the batch.

- ``sifa_swin_*``: every block with shift 0 (even index) adds stand-alone inter-frame attention
  after its window attention, through a LayerNorm whose weight and bias start at zero:
  ``x = x + LN0(SIFA_aggregate(x))`` on the frames that have a successor (the last frame passes
  unchanged, as in SPEC section 1). Every shifted block (odd index) adds a dense 3-tap temporal
  conv per token, zero-initialised, as the released code does (``temporal_conv``).
- ``swin_*``: the same network without SIFA and without the temporal conv.

So a ``sifa_swin_*`` model holding a ``swin_*`` model's weights, with its added parts at their
zero init, computes the same logits. Tokens are kept channels-last, ``(N, T, H, W, C)``.
Parameter names follow the Swin reference release (``patch_embed.proj``,
``layers.{i}.blocks.{j}.attn.qkv``, ``layers.{i}.downsample.reduction``, ``norm``, ``head``), so
ImageNet Swin checkpoints inflate into it (:func:`sifa.models.load_2d_swin_weights`).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sifa.models.registry import register_model
from sifa.models.switches import check_clips, check_flag, check_int, check_rate, sifa_block_options
from sifa.nn import InterFrameAggregation

TEMPORAL_CHOICES = ("sifa", "none")


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch ``x`` of whole samples (dim 0) with
    probability ``rate`` in training, scaling the kept ones by ``1 / (1 - rate)``."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def relative_position_index(window: tuple[int, int], table_window: int) -> torch.Tensor:
    """Index into a ``((2*table_window-1)**2, heads)`` bias table for every pair of positions of
    a ``window`` (``wh x ww``, each at most ``table_window``): shape ``(wh*ww, wh*ww)``.

    A window smaller than the table's (a feature map smaller than the window) reads the
    central part of the same table, so the weights serve every input size."""
    ys, xs = torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + table_window - 1
    dx = xs[:, None] - xs[None, :] + table_window - 1
    return dy * (2 * table_window - 1) + dx


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias, through
    :func:`torch.nn.functional.scaled_dot_product_attention`."""

    def __init__(self, dim: int, num_heads: int, window_size: int, *, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the width {dim}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        # The full window's index, built once (not saved: it follows from window_size).
        self.register_buffer(
            "relative_position_index",
            relative_position_index((window_size, window_size), window_size),
            persistent=False,
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        """``(heads, n, n)`` bias for a ``window`` of ``n = wh * ww`` tokens."""
        if window == (self.window_size, self.window_size):
            index = self.relative_position_index
        else:  # a map smaller than the window: the central part of the table
            index = relative_position_index(window, self.window_size)
            index = index.to(self.relative_position_bias_table.device)
        n = window[0] * window[1]
        bias = self.relative_position_bias_table[index.flatten()].view(n, n, self.num_heads)
        return bias.permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, window: tuple[int, int],
                mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """``windows (B * nW, n, C)`` -> same shape; ``mask (nW, n, n)`` additive (0 or -100)
        keeps the shifted windows' regions apart."""
        b, n, c = windows.shape
        qkv = self.qkv(windows).view(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B * nW, heads, n, head_dim)
        bias = self.position_bias(window).to(q.dtype)
        if mask is None:
            attn_mask = bias.unsqueeze(0)
        else:
            windows_per_sample = mask.shape[0]
            attn_mask = (mask.to(q.dtype).unsqueeze(1) + bias).unsqueeze(0)
            attn_mask = attn_mask.expand(b // windows_per_sample, -1, -1, -1, -1).flatten(0, 1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


def _window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W, C)`` with ``H, W`` whole windows -> ``(B * nW, wh * ww, C)``."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def _window_reverse(windows: torch.Tensor, window: tuple[int, int], h: int, w: int) -> torch.Tensor:
    wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def _shift_mask(h: int, w: int, window: tuple[int, int], shift: tuple[int, int],
                device: torch.device) -> torch.Tensor:  # fmt: skip
    """Swin's attention mask for cyclically shifted windows on a padded ``h x w`` map:
    ``(nW, n, n)``, 0 between tokens of the same region and -100 otherwise.

    Rows fall in regions ``[0, h - window)``, ``[h - window, h - shift)``, ``[h - shift, h)``
    (columns likewise); the labels come from comparisons rather than writes into a tensor, so
    that exporters fold the mask into a constant."""
    rows = _shift_regions(h, window[0], shift[0], device)
    cols = _shift_regions(w, window[1], shift[1], device)
    region = (rows.view(h, 1) * 3 + cols.view(1, w)).view(1, h, w, 1)
    regions = _window_partition(region, window).squeeze(-1)
    different = regions.unsqueeze(1) != regions.unsqueeze(2)
    return different.float() * -100.0


def _shift_regions(size: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region label 0, 1 or 2 of each position along one axis (all 0 without a shift)."""
    position = torch.arange(size, device=device)
    if shift == 0:
        return torch.zeros_like(position)
    return (position >= size - window).long() + (position >= size - shift).long()


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TemporalConv(nn.Module):
    """Dense 3-tap conv over time on tokens ``(N, T, H, W, C)``, ``C -> C``, zero-padded at the
    clip's ends; weight ``(C_out, C_in, 3)`` (tap 0 reads ``t-1``) and bias, both zero at init."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, channels, 3))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One matmul gives every tap's contribution; shifting them in time adds them up.
        c = x.shape[-1]
        taps = F.linear(x, self.weight.permute(2, 0, 1).reshape(3 * c, c)).split(c, dim=-1)
        before, now, after = taps
        out = now + self.bias
        out = out + F.pad(before[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))  # t-1 -> t
        return out + F.pad(after[:, 1:], (0, 0, 0, 0, 0, 0, 0, 1))  # t+1 -> t

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, taps=3"


class SwinBlock(nn.Module):
    """One Swin block on tokens ``(N, T, H, W, C)``, plus the block's temporal operator.

    ``x = x + DropPath(WindowAttention(LN(x)))``, then for SIFA blocks
    ``x[:, :-1] += sifa_norm(SIFA_aggregate(x))`` or, for temporal-conv blocks,
    ``x = x + temporal_conv(x)``, then ``x = x + DropPath(MLP(LN(x)))``. Odd blocks shift the
    windows by half a window (none where the map is no larger than the window)."""

    def __init__(self, dim, num_heads, window_size, *, shifted, mlp_ratio=4.0, qkv_bias=True,
                 drop=0.0, attn_drop=0.0, drop_path=0.0, sifa=None,
                 temporal_conv=False):  # fmt: skip
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, num_heads, window_size, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = DropPath(drop_path)
        self.sifa = InterFrameAggregation(dim, **sifa) if sifa is not None else None
        self.sifa_norm = nn.LayerNorm(dim) if sifa is not None else None
        self.temporal_conv = TemporalConv(dim) if temporal_conv else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def reset_added_parts(self) -> None:
        """Zero init of the parts SIFA-Transformer adds, so the block starts as plain Swin."""
        if self.sifa_norm is not None:
            nn.init.zeros_(self.sifa_norm.weight)
            nn.init.zeros_(self.sifa_norm.bias)
            self.sifa.reset_parameters()
        if self.temporal_conv is not None:
            nn.init.zeros_(self.temporal_conv.weight)
            nn.init.zeros_(self.temporal_conv.bias)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Shifted-window attention on frames ``(B, H, W, C)``, padded to whole windows."""
        h, w = x.shape[1:3]
        # A map no larger than the window in a dimension: one window there, no shift (Swin).
        window = (min(self.window_size, h), min(self.window_size, w))
        shift = tuple(
            ws // 2 if self.shifted and size > self.window_size else 0
            for ws, size in zip(window, (h, w), strict=True)
        )
        pad_h, pad_w = (-h) % window[0], (-w) % window[1]
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        mask = None
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
            mask = _shift_mask(hp, wp, window, shift, x.device)
        windows = self.attn(_window_partition(x, window), window, mask)
        x = _window_reverse(windows, window, hp, wp)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, h, w, c = x.shape
        attended = self.window_attention(self.norm1(x).view(n * t, h, w, c))
        x = x + self.drop_path(attended.reshape(n, t, h, w, c))
        if self.sifa is not None and t > 1:
            aggregate = self.sifa(x.permute(0, 4, 1, 2, 3))  # (N, C, T-1, H, W)
            added = self.sifa_norm(aggregate.permute(0, 2, 3, 4, 1))
            x = torch.cat((x[:, :-1] + added, x[:, -1:]), dim=1)
        if self.temporal_conv is not None:
            x = x + self.temporal_conv(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (odd maps zero-padded), LayerNorm, ``4C -> 2C``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:4]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # The reference release's order: (0, 0), (1, 0), (0, 1), (1, 1) as (row, column).
        parts = [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class SwinStage(nn.Module):
    """``blocks`` then, except in the last stage, ``downsample`` (the reference layout)."""

    def __init__(self, blocks: list[SwinBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed3d(nn.Module):
    """``Conv3d`` tubelets (stride = kernel) then LayerNorm; ``H, W`` zero-padded to whole
    patches. ``(N, 3, T, H, W)`` -> tokens ``(N, T / tubelet, H / patch, W / patch, C)``."""

    def __init__(self, dim: int, patch_size: int, tubelet_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(3, dim, kernel, stride=kernel)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[3:]
        x = F.pad(x, (0, (-w) % self.patch_size, 0, (-h) % self.patch_size))
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))


class SwinVideo(nn.Module):
    """Swin Transformer on every time step of a clip, with SIFA-Transformer's temporal parts.

    Input: clips ``(N, 3, T, H, W)``, ``T`` a positive multiple of ``tubelet_size``, any ``H, W``
    (padded to whole patches and windows, as Swin does). Output: logits ``(N, num_classes)``,
    the average over time steps of per-time-step logits (LayerNorm, spatial average,
    dropout, ``head``).

    Args:
        temporal: ``"sifa"`` (SIFA-Transformer) or ``"none"`` (per-frame Swin).
        embed_dim: Swin's embedding width (of the first stage).
        depths: Swin's blocks per stage.
        num_heads: Swin's attention heads per stage.
        window_size: Swin's attention window.
        patch_size: Swin's spatial patch.
        mlp_ratio: Swin's MLP width over the embedding width.
        tubelet_size: frames per token (the patch embedding's temporal kernel and stride).
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks.
        dropout: before the classifier.
        temporal_conv: with ``temporal="sifa"``, the released code's zero-init 3-tap temporal
            conv in every shifted block.
        sifa_options: :class:`sifa.nn.InterFrameAttention` switches of the SIFA blocks.
        gradient_checkpointing: recompute each block in the backward instead of storing its
            activations (less memory, about a third more time); also
            :meth:`set_gradient_checkpointing`.
    """

    def __init__(
        self,
        *,
        temporal: str,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 4,
        tubelet_size: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 400,
        drop_path_rate: float = 0.1,
        dropout: float = 0.5,
        temporal_conv: bool = True,
        sifa_options: dict | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if temporal not in TEMPORAL_CHOICES:
            raise ValueError(f"temporal must be one of {TEMPORAL_CHOICES}, got {temporal!r}")
        for name, value in (("embed_dim", embed_dim), ("window_size", window_size),
                            ("patch_size", patch_size), ("tubelet_size", tubelet_size),
                            ("num_classes", num_classes)):  # fmt: skip
            check_int(name, value, 1)
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {depths} and num_heads {num_heads} differ in length")
        check_rate("drop_path_rate", drop_path_rate)
        check_rate("dropout", dropout)
        check_flag("temporal_conv", temporal_conv)
        check_flag("gradient_checkpointing", gradient_checkpointing)
        self.temporal = temporal
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.patch_embed = PatchEmbed3d(embed_dim, patch_size, tubelet_size)
        total = sum(depths)
        rates = [drop_path_rate * i / max(1, total - 1) for i in range(total)]
        sifa = dict(sifa_options or {}) if temporal == "sifa" else None
        stages, dim, first = [], embed_dim, 0
        for index, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            blocks = [
                SwinBlock(
                    dim,
                    heads,
                    window_size,
                    shifted=j % 2 == 1,
                    mlp_ratio=mlp_ratio,
                    drop_path=rates[first + j],
                    sifa=sifa if j % 2 == 0 else None,
                    temporal_conv=temporal == "sifa" and temporal_conv and j % 2 == 1,
                )
                for j in range(depth)
            ]
            last = index == len(depths) - 1
            stages.append(SwinStage(blocks, None if last else PatchMerging(dim)))
            first += depth
            dim = dim if last else 2 * dim
        self.layers = nn.ModuleList(stages)
        self.num_features = dim
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.reset_parameters()
        self.set_gradient_checkpointing(gradient_checkpointing)

    def reset_parameters(self) -> None:
        """Swin's init (truncated normal linears, unit LayerNorms), then the zero init of the
        parts SIFA-Transformer adds."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, SwinBlock):
                m.reset_added_parts()

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        for stage in self.layers:
            stage.gradient_checkpointing = enabled

    def check_input(self, x: torch.Tensor) -> None:
        check_clips(x, self.tubelet_size, "tubelet_size")
        if min(x.shape[3:]) < self.patch_size:
            raise ValueError(
                f"clips must be at least {self.patch_size} pixels high and wide, "
                f"got {tuple(x.shape[3:])}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(N, T', H', W', C)`` of the last stage, after the final LayerNorm."""
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        per_step = self.head(self.dropout(features.mean(dim=(2, 3))))  # (N, T', classes)
        return per_step.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for ``num_classes`` classes."""
        check_int("num_classes", num_classes, 1)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes, device=self.head.weight.device)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)


# ---------------------------------------------------------------------------------------------
# Registered builders.

_VARIANTS = {
    "t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
# Stochastic depth: 0.5 for Swin-B in the authors' setting (SPEC section 3); Video Swin's
# Kinetics-400 values for the smaller variants.
_DROP_PATH = {"t": 0.1, "s": 0.2, "b": 0.5}


def _swin_video(variant: str, temporal: str, drop_path_rate: float | None, **switches):
    """The ``variant``'s Swin with its default stochastic depth unless one is given."""
    if drop_path_rate is None:
        drop_path_rate = _DROP_PATH[variant]
    return SwinVideo(
        temporal=temporal, **_VARIANTS[variant], drop_path_rate=drop_path_rate, **switches
    )


def _sifa_swin(
    variant: str,
    *,
    num_classes: int = 400,
    offsets: str = "deformable",
    temporal_conv: bool = True,
    drop_path_rate: float | None = None,
    dropout: float = 0.5,
    window_size: int = 7,
    patch_size: int = 4,
    tubelet_size: int = 4,
    gradient_checkpointing: bool = False,
    msm: str = "official",
    offset_init: str = "zero",
    scale: float | str | None = "1/C",
    normalize: str = "none",
    sifa_kernel_size: int = 3,
    sifa_dilation: int = 1,
    sifa_groups: int = 1,
) -> SwinVideo:
    sifa_options = sifa_block_options(
        offsets=offsets, msm=msm, offset_init=offset_init, scale=scale, normalize=normalize,
        sifa_kernel_size=sifa_kernel_size, sifa_dilation=sifa_dilation, sifa_groups=sifa_groups,
    )  # fmt: skip
    return _swin_video(
        variant, "sifa", drop_path_rate, num_classes=num_classes, dropout=dropout,
        window_size=window_size, patch_size=patch_size, tubelet_size=tubelet_size,
        temporal_conv=temporal_conv, sifa_options=sifa_options,
        gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip


def _swin(
    variant: str,
    *,
    num_classes: int = 400,
    drop_path_rate: float | None = None,
    dropout: float = 0.5,
    window_size: int = 7,
    patch_size: int = 4,
    tubelet_size: int = 4,
    gradient_checkpointing: bool = False,
) -> SwinVideo:
    return _swin_video(
        variant, "none", drop_path_rate, num_classes=num_classes, dropout=dropout,
        window_size=window_size, patch_size=patch_size, tubelet_size=tubelet_size,
        gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip


_SIFA_SWIN_B_PAPER = {
    "gmacs": {64: 270},
    "kinetics400_top1": {64: 83.1},
    "something_v1_top1": {64: 57.3},
    "something_v2_top1": {64: 69.8},
}
_BASELINE_NOTE = "per-frame Swin: the same network without SIFA and the temporal conv"

sifa_swin_t = register_model(
    partial(_sifa_swin, "t"), name="sifa_swin_t", note="SIFA-Transformer on Swin-T"
)
sifa_swin_s = register_model(
    partial(_sifa_swin, "s"), name="sifa_swin_s", note="SIFA-Transformer on Swin-S"
)
sifa_swin_b = register_model(
    partial(_sifa_swin, "b"),
    name="sifa_swin_b",
    paper=_SIFA_SWIN_B_PAPER,
    note="the paper's SIFA-Transformer (64 frames, every 2nd)",
)
swin_t = register_model(partial(_swin, "t"), name="swin_t", note=_BASELINE_NOTE)
swin_s = register_model(partial(_swin, "s"), name="swin_s", note=_BASELINE_NOTE)
swin_b = register_model(partial(_swin, "b"), name="swin_b", note=_BASELINE_NOTE)
