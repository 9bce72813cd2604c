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
    cross-entropies, as in the paper.
    """
    heads = output if isinstance(output, tuple) else (output,)
    return sum(F.cross_entropy(h, target, label_smoothing=label_smoothing) for h in heads)
