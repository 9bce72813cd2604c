"""The SIFA step on clips against a loop composition of SPEC section 1, steps 1-8."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from sifa.nn import InterFrameAggregation, InterFrameAttention

from loop_reference import (
    regular_window_attention,
    slow_attention_weights,
    slow_inter_frame_attention,
)

F64 = torch.float64


def clip(n=1, c=4, t=3, h=3, w=4, seed=0, dtype=F64):
    return torch.randn(n, c, t, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def module(channels=4, weight_std=0.5, seed=1, **switches):
    """A float64 module whose offset conv predicts non-trivial, fractional offsets."""
    block = InterFrameAttention(channels, **switches).double()
    if weight_std:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            block.offset_conv.weight.copy_(
                weight_std * torch.randn(block.offset_conv.weight.shape, generator=gen, dtype=F64)
            )
    return block


def slow_block(x, weight, msm="official", scale=None, **switches):
    """SPEC section 1 written out frame pair by frame pair."""
    frames = []
    steps = x.shape[2]
    for t in range(steps):
        current = x[:, :, t]
        if t == steps - 1:
            frames.append(current)
            break
        following = x[:, :, t + 1]
        gate = 1 / (1 + torch.exp(-(following - current)))
        saliency = gate * following + (following if msm == "official" else 0)
        offset = F.conv2d(saliency, weight, padding=1)
        attended = slow_inter_frame_attention(current, following, offset, scale=scale, **switches)
        frames.append(current + attended)
    return torch.stack(frames, dim=2)


SWITCHES = [
    dict(),
    dict(msm="paper"),
    dict(normalize="softmax", groups=2),
    dict(dilation=2, scale="1/sqrt(C)"),
    dict(kernel_size=1),
    dict(kernel_size=5, scale=0.3),
]


@pytest.mark.parametrize(
    "switches", SWITCHES, ids=lambda s: "-".join(map(str, s.values())) or "default"
)
def test_matches_loop_composition(switches):
    block = module(**switches)
    x = clip()
    slow_switches = dict(switches)
    if slow_switches.get("scale") == "1/sqrt(C)":
        slow_switches["scale"] = 1 / math.sqrt(4 // slow_switches.get("groups", 1))
    expected = slow_block(x, block.offset_conv.weight.detach(), **slow_switches)
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-10)


def test_last_frame_unchanged_and_others_changed():
    x = clip(t=4)
    y = module()(x)
    assert torch.equal(y[:, :, -1], x[:, :, -1])
    assert not torch.allclose(y[:, :, :-1], x[:, :, :-1])


def test_single_frame_is_identity():
    x = clip(t=1)
    assert torch.equal(module()(x), x)


@pytest.mark.parametrize("steps", [2, 3, 7])
def test_any_clip_length(steps):
    x = clip(n=2, t=steps)
    assert module()(x).shape == x.shape


def test_zero_initialised_offsets_give_regular_window():
    block = InterFrameAttention(4).double()
    assert torch.count_nonzero(block.offset_conv.weight) == 0
    x = clip(t=3, h=5, w=5)
    y = block(x)
    for t in range(2):
        expected = x[:, :, t] + regular_window_attention(x[:, :, t], x[:, :, t + 1])
        torch.testing.assert_close(y[:, :, t], expected, rtol=0, atol=1e-12)


def test_zero_offsets_switch_is_a_fixed_regular_window():
    block = InterFrameAttention(4, offsets="zero", offset_init="kaiming").double()
    assert block.offset_conv is None and not list(block.parameters())
    x = 50 * clip(t=3, h=5, w=5)  # large motion: deformable offsets would move
    y = block(x)
    for t in range(2):
        expected = x[:, :, t] + regular_window_attention(x[:, :, t], x[:, :, t + 1])
        torch.testing.assert_close(y[:, :, t], expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(y[:, :, 2], x[:, :, 2], rtol=0, atol=0)


def test_aggregation_returns_the_attended_part_alone():
    x = clip(n=2, t=4, h=4, w=5)
    attention, aggregation = module(), InterFrameAggregation(4).double()
    aggregation.load_state_dict(attention.state_dict())
    attended = aggregation(x)
    assert attended.shape == (2, 4, 3, 4, 5)
    expected = slow_block(x, attention.offset_conv.weight.detach())[:, :, :-1] - x[:, :, :-1]
    torch.testing.assert_close(attended, expected, rtol=1e-9, atol=1e-9)
    assert aggregation(clip(t=1)).shape == (1, 4, 0, 3, 4)


def test_kaiming_offset_init_is_fan_out_normal():
    torch.manual_seed(0)
    block = InterFrameAttention(64, offset_init="kaiming")
    fan_out = 18 * 3 * 3
    std = block.offset_conv.weight.std().item()
    assert abs(std - math.sqrt(2 / fan_out)) < 0.05 * math.sqrt(2 / fan_out)


def test_reset_parameters_restores_zero_init_after_model_wide_init():
    block = InterFrameAttention(8)
    for m in block.modules():  # what a model-wide init does to every conv
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    block.reset_parameters()
    assert torch.count_nonzero(block.offset_conv.weight) == 0


def test_information_flows_only_backwards_in_time():
    block = module()
    x = clip(t=5)
    changed = x.clone()
    changed[:, :, 2] += torch.randn_like(changed[:, :, 2])
    y, y_changed = block(x), block(changed)
    assert torch.equal(y[:, :, 3:], y_changed[:, :, 3:])  # later frames never see frame 2
    assert torch.equal(y[:, :, :1], y_changed[:, :, :1])  # frame 0 reads only frame 1
    assert not torch.allclose(y[:, :, 1], y_changed[:, :, 1])  # frame 1 reads frame 2


@pytest.mark.parametrize("switches", SWITCHES[:4], ids=["default", "paper", "softmax-g2", "d2"])
def test_gradcheck_input_and_offset_weights(switches):
    block = module(weight_std=0.3, **switches)
    x = clip(t=3, h=3, w=3).requires_grad_()
    weight = block.offset_conv.weight.detach().clone().requires_grad_()

    def run(x, weight):
        return functional_call(block, {"offset_conv.weight": weight}, (x,))

    assert torch.autograd.gradcheck(run, (x, weight))


def test_float32_and_bfloat16_autocast_on_cpu():
    block = InterFrameAttention(8, offset_init="kaiming")
    x = torch.randn(2, 8, 3, 6, 6)
    assert block(x).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), block(x), rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(channels=0), ValueError, r"channels must be a positive integer, got 0"),
        (dict(channels=6, groups=4), ValueError, r"groups=4 must divide channels=6"),
        (dict(kernel_size=2), ValueError, r"kernel_size must be a positive odd integer, got 2"),
        (dict(msm="both"), ValueError, r"msm must be one of \('paper', 'official'\), got 'both'"),
        (dict(offset_init="xavier"), ValueError, r"offset_init must be one of .*'xavier'"),
        (dict(offsets="learned"), ValueError, r"offsets must be one of .*'learned'"),
        (dict(normalize="l2"), ValueError, r"normalize must be one of .*'l2'"),
        (dict(scale="C"), ValueError, r"scale must be None, a number or one of .*'C'"),
    ],
)
def test_bad_switches_are_named(kwargs, error, message):
    kwargs = dict(dict(channels=4), **kwargs)
    with pytest.raises(error, match=message):
        InterFrameAttention(**kwargs)


@pytest.mark.parametrize("shape", [(1, 4, 3, 5), (1, 5, 3, 4, 4)])
def test_bad_clip_shape_is_named(shape):
    with pytest.raises(ValueError, match=r"expects clips \(N, C, T, H, W\) with C=4, got"):
        InterFrameAttention(4)(torch.zeros(shape))


INTERNALS_SWITCHES = [dict(), dict(msm="paper", normalize="softmax", groups=2, dilation=2)]


@pytest.mark.parametrize("switches", INTERNALS_SWITCHES, ids=["default", "softmax-g2-d2"])
def test_internals_are_the_saliency_offsets_and_weights_of_every_pair(switches):
    x = clip(n=2, t=3)
    block = module(**switches)
    internals = block.internals(x)
    weight = block.offset_conv.weight
    scale = None if "groups" not in switches else 1 / 2  # "1/C" per group of 2 channels
    for n in range(2):
        for t in range(2):
            current, following = x[n : n + 1, :, t], x[n : n + 1, :, t + 1]
            gate = 1 / (1 + torch.exp(-(following - current)))
            saliency = gate * following + (following if "msm" not in switches else 0)
            offset = F.conv2d(saliency, weight, padding=1)
            weights = slow_attention_weights(
                current, following, offset, scale=scale,
                **{k: v for k, v in switches.items() if k != "msm"},
            )  # fmt: skip
            torch.testing.assert_close(internals.saliency[n, :, t], saliency[0])
            torch.testing.assert_close(internals.offsets[n, t], offset[0].view(9, 2, 3, 4))
            torch.testing.assert_close(internals.weights[n, t], weights[0])


def test_internals_need_a_frame_pair():
    with pytest.raises(ValueError, match=r"internals need clips of 2 frames or more"):
        module().internals(clip(t=1))
