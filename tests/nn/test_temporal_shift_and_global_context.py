"""Temporal shift and the global-context block against loop implementations."""

from __future__ import annotations

import torch

from sifa.nn import GlobalContext, temporal_shift


def test_temporal_shift_matches_loops():
    x = torch.randn(2, 16, 5, 3, 4)
    out = temporal_shift(x, shift_div=8)
    fold = 2
    for t in range(5):
        for c in range(16):
            if c < fold:
                expected = x[:, c, t + 1] if t + 1 < 5 else torch.zeros_like(x[:, c, t])
            elif c < 2 * fold:
                expected = x[:, c, t - 1] if t >= 1 else torch.zeros_like(x[:, c, t])
            else:
                expected = x[:, c, t]
            assert torch.equal(out[:, c, t], expected), (t, c)


def test_temporal_shift_single_frame_zeroes_shifted_channels():
    x = torch.randn(1, 8, 1, 2, 2)
    out = temporal_shift(x, shift_div=4)
    assert torch.count_nonzero(out[:, :4]) == 0 and torch.equal(out[:, 4:], x[:, 4:])


def test_global_context_matches_hand_computation():
    torch.manual_seed(0)
    block = GlobalContext(32, reduction=16)
    torch.nn.init.normal_(block.fc2.weight)
    torch.nn.init.normal_(block.fc2.bias)
    x = torch.randn(2, 32, 3, 4, 5)
    for n in range(2):
        pooled = x[n].reshape(32, -1).mean(1)
        hidden = torch.relu(block.fc1.weight @ pooled + block.fc1.bias)
        vector = block.fc2.weight @ hidden + block.fc2.bias
        torch.testing.assert_close(block(x)[n], x[n] + vector[:, None, None, None])


def test_global_context_starts_as_identity():
    block = GlobalContext(64)
    x = torch.randn(2, 64, 2, 3, 3)
    assert block.fc1.out_features == 4
    assert torch.equal(block(x), x)
