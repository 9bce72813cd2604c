"""The training loss with integer labels and with soft (mixed) targets, smoothing included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sifa.models import DualLogits, classification_loss

N, CLASSES = 6, 5


def soft_cross_entropy(logits, targets):
    """The hand computation: ``-(t * log_softmax(z)).sum(-1).mean()``."""
    return -(targets * F.log_softmax(logits, -1)).sum(-1).mean()


def smoothed(one_hot, epsilon):
    return one_hot * (1 - epsilon) + epsilon / CLASSES


def logits(seed=0):
    return torch.randn(N, CLASSES, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)  # fmt: skip


def mixed_targets(lam=0.3):
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    one_hot = F.one_hot(labels, CLASSES).double()
    return labels, one_hot, lam * one_hot + (1 - lam) * one_hot.flip(0)


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_soft_targets_give_the_hand_computed_cross_entropy(dual, epsilon):
    main, other = logits(0), logits(1)
    lam = 0.3
    _, one_hot, targets = mixed_targets(lam)
    output = DualLogits(main, other) if dual else main
    heads = (main, other) if dual else (main,)
    got = classification_loss(output, targets, label_smoothing=epsilon)
    # Smoothing each one-hot label, then mixing, as timm's mixup does.
    smoothed_mix = lam * smoothed(one_hot, epsilon) + (1 - lam) * smoothed(one_hot.flip(0), epsilon)
    expected = sum(soft_cross_entropy(h, smoothed_mix) for h in heads)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("epsilon", [0.0, 0.2])
def test_one_hot_targets_equal_integer_labels(epsilon):
    main, other = logits(2), logits(3)
    labels, one_hot, _ = mixed_targets()
    for output in (main, DualLogits(main, other)):
        torch.testing.assert_close(
            classification_loss(output, one_hot, label_smoothing=epsilon),
            classification_loss(output, labels, label_smoothing=epsilon),
            rtol=1e-12,
            atol=1e-12,
        )
    expected = soft_cross_entropy(main, smoothed(one_hot, epsilon))
    torch.testing.assert_close(classification_loss(main, labels, label_smoothing=epsilon),
                               expected, rtol=1e-12, atol=1e-12)  # fmt: skip


def test_float32_soft_targets_under_bf16_autocast():
    main = logits(4).float()
    targets = mixed_targets()[2].float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = classification_loss(main.to(torch.bfloat16), targets, label_smoothing=0.1)
    torch.testing.assert_close(loss.float(), soft_cross_entropy(main, targets * 0.9 + 0.02),
                               rtol=0.02, atol=0.02)  # fmt: skip


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (torch.zeros(N, CLASSES + 1), r"soft targets of shape \(6, 6\) do not fit logits of "
                                      r"shape \(6, 5\)"),
        (torch.zeros(N - 1, CLASSES), r"soft targets of shape \(5, 5\) .* \(6, 5\)"),
        (torch.zeros(N), r"soft targets of shape \(6,\) .* \(6, 5\)"),
        (torch.zeros(N, 1, dtype=torch.long), r"integer labels of shape \(6, 1\) .* \(6, 5\)"),
        (torch.zeros(N + 1, dtype=torch.long), r"integer labels of shape \(7,\) .* \(6, 5\)"),
        (torch.zeros(N, dtype=torch.bool), "integer labels or float soft targets, got torch.bool"),
    ],
)  # fmt: skip
def test_targets_of_the_wrong_shape_name_both_shapes(target, message):
    with pytest.raises(ValueError, match=message):
        classification_loss(DualLogits(logits(), logits(1)), target)
