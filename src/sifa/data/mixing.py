"""Mixup and cutmix of training batches: mixed clips and soft targets.

Each clip is mixed with the clip at the mirrored place of the batch (``clips.flip(0)``, as timm's
batch mode): one mixing weight ``lam`` and, for cutmix, one box per batch, the same box in every
frame of every clip. The middle clip of an odd batch, and the clip of a batch of one, is mixed
with itself: it stays as it was (mixup up to float rounding) and its target is its one-hot label.

All randomness comes from the ``numpy.random.Generator`` the caller passes (numpy's, for its
Beta sampler), never from the global RNGs:
the trainer seeds one per micro-batch with :func:`mixing_generator`, so that a resumed run mixes
as an uninterrupted one, whatever the DataLoader's worker count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

_STREAM = 0x6D6978  # keeps the mixing stream apart from anything else seeded with the run's seed


@dataclass(frozen=True)
class MixedBatch:
    """A batch after :class:`BatchMixer`.

    ``clips``: ``(N, C, T, H, W)``; ``targets``: ``(N, classes)`` float32, each row summing to 1:
    ``lam`` on the clip's own class and ``1 - lam`` on its partner's (``labels.flip(0)``).
    ``mode``: ``"mixup"``, ``"cutmix"`` or ``None`` (not mixed: ``lam`` 1, the clips tensor
    returned as given). ``box``: cutmix's ``(top, bottom, left, right)`` pixel bounds (end
    exclusive) of the region pasted from the partner, else ``None``.
    """

    clips: torch.Tensor
    targets: torch.Tensor
    lam: float
    mode: str | None = None
    box: tuple[int, int, int, int] | None = None


def mixing_generator(seed: int, epoch: int, rank: int, batch: int) -> np.random.Generator:
    """A generator for micro-batch ``batch`` (0-based, within the epoch) of epoch ``epoch``
    on process ``rank`` of a run seeded with ``seed``: the same four numbers always give the
    same stream, different ones independent streams."""
    entropy = [_STREAM, seed % 2**64, epoch, rank, batch]
    if min(entropy[2:]) < 0:
        raise ValueError(f"epoch, rank and batch must be >= 0, got {epoch}, {rank}, {batch}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def _probability(name: str, value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


class BatchMixer:
    """Mixup (``mixup_alpha > 0``) and/or cutmix (``cutmix_alpha > 0``) of a batch of clips.

    A batch is mixed with probability ``prob``; with both on, a mixed batch uses cutmix with
    probability ``switch_prob``, else mixup. ``lam ~ Beta(alpha, alpha)`` of the chosen mode.

    - mixup: ``lam * clips + (1 - lam) * clips.flip(0)``;
    - cutmix: a box of area ``(1 - lam) * H * W`` (sides ``sqrt(1 - lam)`` of the frame's,
      rounded) centred on a uniformly drawn pixel and clipped to the frame, pasted from
      ``clips.flip(0)`` into every frame; ``lam`` is then ``1 - box area / (H * W)``.

    Targets are ``lam * one_hot(labels) + (1 - lam) * one_hot(labels.flip(0))``, without label
    smoothing (:func:`sifa.models.classification_loss` applies it).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not math.isfinite(alpha) or alpha < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {alpha!r}")
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("mixup_alpha or cutmix_alpha must be > 0 (both 0: nothing to mix)")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob = _probability("prob", prob)
        self.switch_prob = _probability("switch_prob", switch_prob)

    def __repr__(self) -> str:
        return (
            f"BatchMixer(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, "
            f"cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, switch_prob={self.switch_prob})"
        )

    def __call__(
        self, clips: torch.Tensor, labels: torch.Tensor, *, generator: np.random.Generator
    ) -> MixedBatch:
        """Mix ``clips`` ``(N, C, T, H, W)`` (floating point) with integer ``labels`` ``(N,)``
        in ``[0, num_classes)``, drawing from ``generator`` (see :func:`mixing_generator`; the
        clips may be on any device)."""
        self._check(clips, labels)
        mode = self._draw_mode(generator)
        if mode is None:
            return MixedBatch(clips, self._targets(labels, 1.0), 1.0)
        alpha = self.mixup_alpha if mode == "mixup" else self.cutmix_alpha
        lam = float(generator.beta(alpha, alpha))
        partners = clips.flip(0)
        if mode == "mixup":
            mixed = lam * clips + (1 - lam) * partners
            return MixedBatch(mixed, self._targets(labels, lam), lam, mode)
        height, width = clips.shape[-2:]
        top, bottom, left, right = _cutmix_box(lam, height, width, generator)
        mixed = clips.clone()
        mixed[..., top:bottom, left:right] = partners[..., top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (height * width)
        box = (top, bottom, left, right)
        return MixedBatch(mixed, self._targets(labels, lam), lam, mode, box)

    def _check(self, clips: torch.Tensor, labels: torch.Tensor) -> None:
        if clips.dim() != 5 or not clips.is_floating_point():
            raise ValueError(
                f"clips must be a floating-point (N, C, T, H, W) tensor, got {clips.dtype} of "
                f"shape {tuple(clips.shape)}"
            )
        if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex():
            raise ValueError(
                f"labels must be integer class indices (N,), got {labels.dtype} of shape "
                f"{tuple(labels.shape)}"
            )
        if labels.shape[0] != clips.shape[0] or labels.shape[0] == 0:
            raise ValueError(
                f"clips {tuple(clips.shape)} and labels {tuple(labels.shape)} must hold the same "
                "number (>= 1) of clips"
            )
        low, high = labels.aminmax()
        if low < 0 or high >= self.num_classes:
            raise ValueError(
                f"labels must be in [0, {self.num_classes}), got values from {int(low)} to "
                f"{int(high)}"
            )

    def _draw_mode(self, generator: np.random.Generator) -> str | None:
        # Both draws always happen, so that one batch's stream does not depend on the settings.
        mixed, cutmix = generator.random(2).tolist()
        if mixed >= self.prob:
            return None
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            return "cutmix" if cutmix < self.switch_prob else "mixup"
        return "mixup" if self.mixup_alpha > 0 else "cutmix"

    def _targets(self, labels: torch.Tensor, lam: float) -> torch.Tensor:
        one_hot = torch.zeros(labels.shape[0], self.num_classes, device=labels.device)
        one_hot.scatter_(1, labels[:, None].long(), 1.0)
        if lam == 1.0:
            return one_hot
        return lam * one_hot + (1 - lam) * one_hot.flip(0)


def _cutmix_box(
    lam: float, height: int, width: int, generator: np.random.Generator
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of a box of area about ``(1 - lam) * height * width``
    centred on a uniformly drawn pixel, clipped to the frame."""
    side = math.sqrt(1 - lam)
    box_height, box_width = round(height * side), round(width * side)
    centre_y, centre_x = (int(c) for c in generator.integers((height, width)))
    top, left = centre_y - box_height // 2, centre_x - box_width // 2
    return (
        max(top, 0),
        min(top + box_height, height),
        max(left, 0),
        min(left + box_width, width),
    )
