"""Multiply-add counts against a count written out from the architecture, and the paper."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import sifa
from sifa.models.complexity import measure_complexity, model_complexity
from sifa.ops import inter_frame_attention


def test_operator_count_is_six_macs_per_channel_and_tap():
    q, k = torch.randn(2, 8, 5, 6, requires_grad=True), torch.randn(2, 8, 5, 6)
    offset = torch.randn(2, 2 * 25, 5, 6)
    with FlopCounterMode(display=False) as counter:
        out = inter_frame_attention(q, k, offset, kernel_size=5)
    forward_macs = 6 * 2 * 8 * 25 * 5 * 6  # 4 bilinear + 1 score + 1 aggregation
    assert counter.get_total_flops() == 2 * forward_macs
    with FlopCounterMode(display=False) as counter:
        out.sum().backward()
    assert counter.get_total_flops() == 4 * forward_macs


def resnet_macs(depth: int, frames: int, size: int, sifa: bool, classes: int = 400) -> int:
    """Multiply-adds of SPEC section 2's network, counted by hand from its definition."""
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    steps = frames // 4
    side = size // 2
    total = 3 * 64 * 4 * 7 * 7 * steps * side * side  # stem
    side = math.ceil(side / 2)  # max pool

    def stage(stage_index, planes, count, in_channels, side, steps, stride):
        macs = 0
        out_side = side // stride
        for index in range(count):
            cin = in_channels if index == 0 else planes * 4
            macs += (
                cin * planes * steps * side * side
                if index == 0
                else cin * planes * steps * out_side**2
            )
            macs += planes * planes * 9 * steps * out_side**2
            macs += planes * planes * 4 * steps * out_side**2
            if index == 0:
                macs += in_channels * planes * 4 * steps * out_side**2  # downsample
            if stage_index > 0 and index % 2 == 0:  # GC: two linear layers
                macs += 2 * planes * 4 * (planes * 4 // 16)
            if sifa and stage_index > 0 and index % 2 == 1:
                pairs = steps - 1
                macs += planes * 18 * 9 * pairs * out_side**2  # offset conv
                macs += 6 * planes * 9 * pairs * out_side**2  # the operator
        return macs, out_side

    in_channels = 64
    for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
        if index == 3:
            res4_side, res4_channels = side, in_channels
        macs, side = stage(index, planes, count, in_channels, side, steps, 1 if index == 0 else 2)
        total += macs
        in_channels = planes * 4
    dual, _ = stage(3, 512, blocks[3], res4_channels, res4_side, math.ceil(steps / 2), 1)
    return total + dual + 2 * 2048 * classes


@pytest.mark.parametrize("depth", [50, 101])
@pytest.mark.parametrize("frames", [16, 32])
@pytest.mark.parametrize("family", ["sifa", "c2d"])
def test_counts_match_the_hand_count(family, depth, frames):
    counted = model_complexity(f"{family}_resnet{depth}", frames, 224)
    assert counted.gmacs * 1e9 == pytest.approx(resnet_macs(depth, frames, 224, family == "sifa"))


def swin_macs(variant: str, frames: int, size: int, sifa: bool, classes: int = 400) -> int:
    """Multiply-adds of SPEC section 3's network at a size whose maps are whole 7x7 windows or
    smaller than one window (no padding then; odd maps are padded by the patch merging),
    counted by hand: per token and block ``qkv 3C^2 + proj C^2 + MLP 8C^2`` and the window
    attention's two products ``2 * 49 * C``; SIFA blocks add the offset conv and the operator
    on every frame pair, shifted blocks the 3-tap temporal conv."""
    dim, depths = {"t": (96, (2, 2, 6, 2)), "s": (96, (2, 2, 18, 2)), "b": (128, (2, 2, 18, 2))}[
        variant
    ]
    steps, side = frames // 4, size // 4
    total = 3 * 4 * 4 * 4 * dim * steps * side * side  # tubelet embedding
    for index, depth in enumerate(depths):
        pixels = side * side
        tokens = steps * pixels
        window = min(7, side) ** 2
        for block in range(depth):
            total += tokens * (12 * dim * dim + 2 * window * dim)
            if sifa and block % 2 == 0:
                total += (steps - 1) * pixels * (dim * 18 * 9 + 6 * dim * 9)
            if sifa and block % 2 == 1:
                total += tokens * 3 * dim * dim
        if index < 3:
            side = math.ceil(side / 2)
            total += steps * side * side * 4 * dim * 2 * dim  # patch merging
            dim *= 2
    return total + steps * dim * classes  # the head on every time step


@pytest.mark.parametrize("variant", ["t", "s", "b"])
@pytest.mark.parametrize("family", ["sifa_swin", "swin"])
def test_swin_counts_match_the_hand_count(family, variant):
    counted = model_complexity(f"{family}_{variant}", 8, 224)
    assert counted.gmacs * 1e9 == pytest.approx(swin_macs(variant, 8, 224, family == "sifa_swin"))


@pytest.mark.parametrize("name, gmacs", [("swin_t", 4.5), ("swin_s", 8.7), ("swin_b", 15.4)])
def test_one_time_step_costs_what_the_swin_paper_gives_per_image(name, gmacs):
    # Swin's paper (Table 1) at 224 px; the tubelet adds 3 more 4x4 taps, the head differs.
    assert model_complexity(name, 4, 224).gmacs == pytest.approx(gmacs, rel=0.015)


@pytest.mark.parametrize(
    "name, frames, paper",
    [
        ("sifa_resnet50", 16, 25),
        ("sifa_resnet101", 16, 39),
        ("sifa_resnet101", 32, 78),
        ("sifa_resnet101", 64, 157),
        ("c2d_resnet50", 16, 23),
        ("sifa_swin_b", 64, 270),
    ],
)
def test_within_five_percent_of_the_paper(name, frames, paper):
    assert model_complexity(name, frames, 224).gmacs == pytest.approx(paper, rel=0.05)
    assert sifa.models.model_entry(name).paper["gmacs"][frames] == paper


def test_meta_device_count_equals_a_real_run():
    torch.manual_seed(0)
    real = measure_complexity(sifa.create_model("sifa_resnet18"), 8, 64)
    meta = model_complexity("sifa_resnet18", 8, 64)
    assert real.gmacs == meta.gmacs and real.params == meta.params
    assert real.sifa_op_gmacs > 0 and real.sifa_gmacs > real.sifa_op_gmacs
    assert sum(real.parts.values()) == pytest.approx(real.gmacs)


def test_cpu_attention_kernel_is_counted_like_the_meta_run():
    # PyTorch counts nothing for its CPU flash attention kernel; sifa.models.complexity adds it.
    torch.manual_seed(0)
    real = measure_complexity(sifa.create_model("sifa_swin_t", num_classes=5), 8, 16)
    meta = model_complexity("sifa_swin_t", 8, 16, num_classes=5)
    assert real.gmacs == meta.gmacs and real.temporal_conv_gmacs == meta.temporal_conv_gmacs
    assert sum(real.parts.values()) == pytest.approx(real.gmacs)
    assert real.gmacs * 1e9 == pytest.approx(swin_macs("t", 8, 16, True, classes=5))


def test_parameters_are_counted():
    result = model_complexity("c2d_resnet50", 16, 224, dual_head=False, gc_blocks=False)
    resnet50_2d_without_fc = 25_557_032 - 2048 * 1000 - 1000  # torchvision's resnet50
    stem_extra = 64 * 3 * 7 * 7 * 3  # the stem kernel has 4 taps in time instead of 1
    assert result.params == resnet50_2d_without_fc + stem_extra + 2048 * 400 + 400
