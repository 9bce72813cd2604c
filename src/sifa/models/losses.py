"""Training loss for every model output, the dual head's included."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(
    output: torch.Tensor | tuple[torch.Tensor, ...],
    target: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of a model's training output.

    ``output`` is a logits tensor ``(N, classes)`` or, for a dual-head model in training mode,
    a tuple of logits (:class:`sifa.models.DualLogits`): the loss is then the sum of the heads'
    cross-entropies, as in the paper, every head against the same ``target``.

    ``target`` is either integer class indices ``(N,)`` or soft targets ``(N, classes)``
    (floating point, each row a probability distribution, as mixup and cutmix give: see
    :class:`sifa.data.mixing.BatchMixer`); the loss of a soft target is
    ``-(target * log_softmax(logits)).sum(-1).mean()``. ``label_smoothing`` ``e`` turns a
    target ``t`` into ``(1 - e) * t + e / classes``: for soft targets that is the same as
    smoothing each one-hot label before mixing them.
    """
    heads = output if isinstance(output, tuple) else (output,)
    for logits in heads:
        _check_target(logits, target)
    return sum(F.cross_entropy(h, target, label_smoothing=label_smoothing) for h in heads)


def _check_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, classes), got shape {tuple(logits.shape)}")
    if target.is_floating_point():
        expected, kind = tuple(logits.shape), "soft targets"
    elif target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must be integer labels or float soft targets, got {target.dtype}")
    else:
        expected, kind = tuple(logits.shape[:1]), "integer labels"
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{kind} of shape {tuple(target.shape)} do not fit logits of shape "
            f"{tuple(logits.shape)}: expected integer labels (N,) = {tuple(logits.shape[:1])} "
            f"or float soft targets (N, classes) = {tuple(logits.shape)}"
        )
