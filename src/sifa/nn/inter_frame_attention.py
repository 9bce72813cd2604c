"""The SIFA step on a clip: motion saliency, offsets, inter-frame attention and fusion."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sifa.ops import functional, reference
from sifa.ops.backends import check_backend

MSM_CHOICES = ("paper", "official")
OFFSET_INIT_CHOICES = ("zero", "kaiming")
OFFSETS_CHOICES = ("deformable", "zero")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def motion_saliency(current: torch.Tensor, following: torch.Tensor, msm: str) -> torch.Tensor:
    """Motion saliency map ``M`` of SPEC section 1, step 1.

    ``"paper"``: ``sigmoid(X_{t+1} - X_t) * X_{t+1}`` (Fig. 3 of the paper);
    ``"official"``: the released code's ``sigmoid(X_{t+1} - X_t) * X_{t+1} + X_{t+1}``.
    """
    gate = torch.sigmoid(following - current)
    return gate * following + following if msm == "official" else gate * following


class Internals(NamedTuple):
    """What one SIFA step computes for the ``T-1`` frame pairs of a clip (see
    :meth:`InterFrameAttention.internals`), in feature-map pixels."""

    saliency: torch.Tensor  # (N, C, T-1, H, W): motion saliency map M of each pair
    offsets: torch.Tensor  # (N, T-1, k*k, 2, H, W): (dy, dx) of every tap
    weights: torch.Tensor  # (N, T-1, G, k*k, H, W): attention weight of every tap


def _frame_pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``t`` and ``t+1`` of every pair of a clip ``(N, C, T, H, W)``, the ``T-1`` pairs
    folded into the batch: two ``(N*(T-1), C, H, W)`` tensors."""
    n, c, t, h, w = x.shape
    frames = x.transpose(1, 2)
    current = frames[:, :-1].reshape(n * (t - 1), c, h, w)
    following = frames[:, 1:].reshape(n * (t - 1), c, h, w)
    return current, following


class InterFrameAttention(nn.Module):
    """Stand-alone inter-frame attention on clips ``(N, C, T, H, W)`` (SPEC section 1).

    For each pair of consecutive frames ``(t, t+1)``: the motion saliency map of the pair
    predicts ``2*k*k`` offsets with a bias-free 3x3 conv, frame ``t`` attends to the deformed
    ``k x k`` neighbourhood of every position in frame ``t+1`` through
    :func:`sifa.ops.inter_frame_attention`, and the result is added to frame ``t``. The last
    frame has no successor and passes through unchanged, so a clip of ``T = 1`` is returned
    as it is. The output has the input's shape; information flows only from ``t+1`` to ``t``.
    The offset conv is the only learned weight.

    Args:
        channels: ``C`` of the clips.
        kernel_size: the operator's neighbourhood size ``k`` (see
            :func:`sifa.ops.inter_frame_attention`, as for the next three).
        dilation: the operator's tap spacing.
        groups: the operator's channel groups.
        scale: the operator's score scale; the default follows the released code.
        normalize: the operator's normalisation; the default follows the released code.
        msm: motion saliency ``"official"`` (released code, default) or ``"paper"``.
        offset_init: ``"zero"`` (default, the authors' intent: SIFA starts as attention over
            a regular window) or ``"kaiming"`` (what the released code actually did:
            ``kaiming_normal_`` with ``mode="fan_out"``, ``nonlinearity="relu"``).
        offsets: ``"deformable"`` (default, the paper: offsets predicted from the motion
            saliency map) or ``"zero"`` (a fixed regular ``k x k`` window: no offset conv, no
            learned weight; the released SIFA-Transformer and the paper's "regular window"
            ablation).
        backend: the operator's backend (``"auto"``, ``"reference"``, ``"cpu"``; see
            :mod:`sifa.ops.backends`). Not saved in ``state_dict``.
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int = 3,
        dilation: int = 1,
        groups: int = 1,
        scale: float | str | None = "1/C",
        normalize: str = "none",
        msm: str = "official",
        offset_init: str = "zero",
        offsets: str = "deformable",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        functional.check_positive_int("channels", channels)
        functional.check_positive_int("kernel_size", kernel_size, odd=True)
        functional.check_positive_int("dilation", dilation)
        functional.check_positive_int("groups", groups)
        if channels % groups != 0:
            raise ValueError(f"groups={groups} must divide channels={channels}")
        functional.check_normalize(normalize)
        functional.resolve_scale(scale, channels // groups)  # fail now, not at the first call
        _check_choice("msm", msm, MSM_CHOICES)
        _check_choice("offset_init", offset_init, OFFSET_INIT_CHOICES)
        _check_choice("offsets", offsets, OFFSETS_CHOICES)
        check_backend(backend)
        self.backend = backend
        self.channels = channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.groups = groups
        self.scale = scale
        self.normalize = normalize
        self.msm = msm
        self.offset_init = offset_init
        self.offset_mode = offsets
        self.offset_conv = (
            nn.Conv2d(channels, 2 * kernel_size * kernel_size, kernel_size=3, padding=1, bias=False)
            if offsets == "deformable"
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the offset conv as ``offset_init`` says.

        Models that initialise all their convs at once call this afterwards, so that a
        model-wide init does not silently replace the zero init (the released code's bug).
        """
        if self.offset_conv is None:
            return
        if self.offset_init == "zero":
            nn.init.zeros_(self.offset_conv.weight)
        else:
            nn.init.kaiming_normal_(self.offset_conv.weight, mode="fan_out", nonlinearity="relu")

    def offsets(self, current: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
        """Offsets ``(B, 2*k*k, H, W)`` for frame pairs given as ``(B, C, H, W)`` each."""
        if self.offset_conv is None:
            b, _, h, w = current.shape
            k2 = self.kernel_size * self.kernel_size
            return current.new_zeros(b, 2 * k2, h, w)
        offset = self.offset_conv(motion_saliency(current, following, self.msm))
        return offset.to(current.dtype)  # under autocast the conv may return a lower precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Y_t = X_t + A_t`` for ``t < T-1`` and ``Y_{T-1} = X_{T-1}``; same shape as ``x``."""
        return torch.cat((x[:, :, :-1] + self.aggregate(x), x[:, :, -1:]), dim=2)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """The attended part alone: ``A_t`` for ``t = 0 ... T-2``, shape ``(N, C, T-1, H, W)``
        (empty in time for ``T = 1``). SIFA-Transformer adds it through its own norm."""
        self._check_clip(x)
        n, c, t, h, w = x.shape
        if t == 1:
            return x[:, :, :0]
        current, following = _frame_pairs(x)
        attended = functional.inter_frame_attention(
            current,
            following,
            self.offsets(current, following),
            kernel_size=self.kernel_size,
            dilation=self.dilation,
            groups=self.groups,
            scale=self.scale,
            normalize=self.normalize,
            backend=self.backend,
        )
        return attended.view(n, t - 1, c, h, w).transpose(1, 2)

    @torch.no_grad()
    def internals(self, x: torch.Tensor) -> Internals:
        """Motion saliency, offsets and attention weights of every frame pair of ``x``
        ``(N, C, T, H, W)``, ``T >= 2``: what :meth:`aggregate` uses, for inspection and
        pictures. The weights come from the reference implementation, whatever the backend."""
        self._check_clip(x)
        n, c, t, h, w = x.shape
        if t < 2:
            raise ValueError(f"internals need clips of 2 frames or more, got {tuple(x.shape)}")
        current, following = _frame_pairs(x)
        offsets = self.offsets(current, following)
        weights = reference.attention_weights(
            current, following, offsets, self.kernel_size, self.dilation, self.groups,
            functional.resolve_scale(self.scale, c // self.groups), self.normalize,
        )  # fmt: skip
        saliency = motion_saliency(current, following, self.msm)
        taps = self.kernel_size * self.kernel_size
        return Internals(
            saliency=saliency.view(n, t - 1, c, h, w).transpose(1, 2),
            offsets=offsets.view(n, t - 1, taps, 2, h, w),
            weights=weights.view(n, t - 1, self.groups, taps, h, w),
        )

    def _check_clip(self, x) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[1] != self.channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"InterFrameAttention expects clips (N, C, T, H, W) with C={self.channels}, "
                f"got {shape}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
            f"groups={self.groups}, scale={self.scale!r}, normalize={self.normalize!r}, "
            f"msm={self.msm!r}, offset_init={self.offset_init!r}, offsets={self.offset_mode!r}"
        )


class InterFrameAggregation(InterFrameAttention):
    """:class:`InterFrameAttention` whose output is the attended part alone, ``A_t`` for
    ``t = 0 ... T-2`` of shape ``(N, C, T-1, H, W)``, for networks that add it their own way
    (SIFA-Transformer adds it through a LayerNorm). Same switches and weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregate(x)
