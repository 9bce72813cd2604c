"""SIFA-Net, C2D and TSM ResNets: every registered model, the dual-head contract, structure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sifa
from sifa.models import DualLogits, classification_loss
from sifa.nn import GlobalContext, InterFrameAttention

RESNETS = sifa.list_models("*_resnet*")


def test_registry_lists_the_families():
    for family in ("sifa", "c2d", "tsm"):
        for depth in (18, 50, 101):
            assert f"{family}_resnet{depth}" in RESNETS


def clip(n=2, frames=8, height=32, width=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, frames, height, width, generator=gen)


@pytest.mark.parametrize("name", RESNETS)
def test_train_step_then_eval_on_another_clip_length(name):
    torch.manual_seed(0)
    model = sifa.create_model(name, num_classes=5)
    output = model(clip(frames=8))
    assert isinstance(output, DualLogits)
    assert output.main.shape == output.dual.shape == (2, 5)
    loss = classification_loss(output, torch.tensor([1, 4]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 0.9 * len(list(model.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        scores = model(clip(n=1, frames=16, height=40, width=48))  # trained on 8 frames, 32 px
    assert scores.shape == (1, 5) and torch.isfinite(scores).all()
    torch.testing.assert_close(F.softmax(scores, -1).sum(), torch.tensor(1.0))


def test_eval_output_is_the_average_of_both_softmaxes():
    model = sifa.create_model("sifa_resnet18", num_classes=7, zero_init_residual=False).eval()
    x = clip()
    with torch.no_grad():
        main, dual = model.forward_features(x)
        p_main = F.softmax(model.fc(main.mean((2, 3, 4))), -1)
        p_dual = F.softmax(model.fc_dual(dual.mean((2, 3, 4))), -1)
        scores = model(x)
    torch.testing.assert_close(F.softmax(scores, -1), (p_main + p_dual) / 2)
    assert not torch.allclose(p_main, p_dual)  # the average is not a copy of one head


def test_classification_loss_sums_the_heads():
    main, dual = torch.randn(4, 6), torch.randn(4, 6)
    target = torch.tensor([0, 5, 2, 2])
    expected = F.cross_entropy(main, target) + F.cross_entropy(dual, target)
    torch.testing.assert_close(classification_loss(DualLogits(main, dual), target), expected)
    torch.testing.assert_close(classification_loss(main, target), F.cross_entropy(main, target))


def test_single_head_returns_logits_in_both_modes():
    model = sifa.create_model("sifa_resnet18", num_classes=3, dual_head=False)
    assert not hasattr(model, "layer4_dual") and not hasattr(model, "fc_dual")
    assert model(clip()).shape == (2, 3)
    assert model.eval()(clip()).shape == (2, 3)


def _block_kinds(layer):
    return [
        "sifa" if block.sifa is not None else "gc" if block.gc is not None else "plain"
        for block in layer
    ]


def test_sifa_resnet50_alternates_gc_and_sifa_from_res3():
    model = sifa.create_model("sifa_resnet50")
    assert _block_kinds(model.layer1) == ["plain"] * 3
    assert _block_kinds(model.layer2) == ["gc", "sifa"] * 2
    assert _block_kinds(model.layer3) == ["gc", "sifa"] * 3
    assert _block_kinds(model.layer4) == ["gc", "sifa", "gc"]
    assert _block_kinds(model.layer4_dual) == ["gc", "sifa", "gc"]
    widths = [m.channels for m in model.modules() if isinstance(m, InterFrameAttention)]
    assert widths == [128, 128, 256, 256, 256, 512, 512]


def test_sifa_resnet101_counts():
    model = sifa.create_model("sifa_resnet101")
    assert len([m for m in model.modules() if isinstance(m, InterFrameAttention)]) == 2 + 11 + 1 + 1


def test_switches_change_the_structure():
    model = sifa.create_model("sifa_resnet50", sifa_stages="res4,res5", gc_blocks=False)
    assert _block_kinds(model.layer2) == ["plain"] * 4
    assert _block_kinds(model.layer3) == ["plain", "sifa"] * 3
    assert not any(isinstance(m, GlobalContext) for m in model.modules())
    only_res5 = sifa.create_model("sifa_resnet18", sifa_stages=["res5"])
    assert [n for n, m in only_res5.named_modules() if isinstance(m, InterFrameAttention)] == [
        "layer4.1.sifa",
        "layer4_dual.1.sifa",
    ]


def test_sifa_switches_reach_every_block():
    model = sifa.create_model(
        "sifa_resnet18",
        msm="paper",
        offset_init="kaiming",
        scale="1/sqrt(C)",
        normalize="softmax",
        sifa_kernel_size=5,
        sifa_dilation=2,
        sifa_groups=4,
    )
    blocks = [m for m in model.modules() if isinstance(m, InterFrameAttention)]
    assert blocks
    for block in blocks:
        assert (block.msm, block.offset_init, block.scale, block.normalize) == (
            "paper",
            "kaiming",
            "1/sqrt(C)",
            "softmax",
        )
        assert (block.kernel_size, block.dilation, block.groups) == (5, 2, 4)
        assert torch.count_nonzero(block.offset_conv.weight) > 0  # kaiming survived model init
    model(clip())


def test_default_init_zeroes_offsets_gc_output_and_last_bn():
    model = sifa.create_model("sifa_resnet50")
    for m in model.modules():
        if isinstance(m, InterFrameAttention):
            assert torch.count_nonzero(m.offset_conv.weight) == 0
        if isinstance(m, GlobalContext):
            assert torch.count_nonzero(m.fc2.weight) == 0
    assert torch.count_nonzero(model.layer2[1].bn3.weight) == 0
    assert torch.count_nonzero(model.layer2[1].bn2.weight) == 128


@pytest.mark.parametrize("stride, frames, steps", [(4, 16, 4), (4, 4, 1), (2, 8, 4), (1, 3, 3)])
def test_stem_temporal_stride(stride, frames, steps):
    model = sifa.create_model("sifa_resnet18", stem_temporal_stride=stride).eval()
    assert model.conv1.weight.shape[2] == stride
    with torch.no_grad():
        main, dual = model.forward_features(clip(n=1, frames=frames))
    assert main.shape[2] == steps and dual.shape[2] == (steps + 1) // 2


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(1, 3, 10, 32, 32), r"T=10 must be a positive multiple of stem_temporal_"),
        (torch.zeros(1, 3, 0, 32, 32), r"T=0 must be a positive multiple"),
        (torch.zeros(1, 1, 8, 32, 32), r"expected RGB clips \(N, 3, T, H, W\), got \(1, 1, 8, 32,"),
        (torch.zeros(3, 8, 32, 32), r"expected RGB clips .* got \(3, 8, 32, 32\)"),
        (torch.zeros(1, 3, 8, 16, 64), r"at least 32x32 pixels, got \(16, 64\)"),
    ],
)  # fmt: skip
def test_bad_clips_are_named(x, message):
    with pytest.raises(ValueError, match=message):
        sifa.create_model("c2d_resnet18")(x)


@pytest.mark.parametrize(
    "name, switches, error, message",
    [
        ("sifa_resnet50", dict(dropout=1.5), ValueError, r"dropout must be a number in \[0, 1\)"),
        ("sifa_resnet50", dict(sifa_stages=["res2"]), ValueError, r"sifa_stages must be drawn"),
        ("sifa_resnet50", dict(dual_head="yes"), TypeError, r"dual_head must be True or False"),
        ("sifa_resnet50", dict(num_classes=0), ValueError, r"num_classes must be an integer >= 1"),
        ("sifa_resnet50", dict(msm="x"), ValueError, r"msm must be one of"),
        ("c2d_resnet50", dict(msm="paper"), TypeError, r"c2d_resnet50 has no switch 'msm'"),
        ("tsm_resnet18", dict(shift_div=1), ValueError, r"shift_div must be an integer >= 2"),
        ("sifa_resnet5", {}, ValueError, r"unknown model 'sifa_resnet5'; did you mean"),
    ],
)
def test_bad_switches_are_named(name, switches, error, message):
    with pytest.raises(error, match=message):
        sifa.create_model(name, **switches)


def _randomise_norms_and_heads(model):
    """Non-trivial BN, GC and classifier weights of moderate size (the convs keep their init)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or name.split(".")[-2].startswith("conv"):
                continue
            noise = 0.1 * torch.randn(tensor.shape, generator=gen)
            if name.endswith(("running_var", ".weight")) and ".gc." not in name:
                tensor.copy_(1 + noise)
            else:
                tensor.copy_(noise)


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_c2d_is_sifa_with_every_sifa_step_removed(depth):
    common = dict(num_classes=6, zero_init_residual=False, dropout=0.0)
    c2d = sifa.create_model(f"c2d_resnet{depth}", **common)
    silent = sifa.create_model(f"sifa_resnet{depth}", scale=0.0, offset_init="kaiming", **common)
    active = sifa.create_model(f"sifa_resnet{depth}", offset_init="kaiming", **common)
    c2d_keys = set(c2d.state_dict())
    sifa_keys = set(silent.state_dict())
    assert c2d_keys == {k for k in sifa_keys if ".sifa." not in k}
    assert {k.split(".sifa.")[1] for k in sifa_keys - c2d_keys} == {"offset_conv.weight"}

    _randomise_norms_and_heads(c2d)
    for model in (silent, active):
        assert model.load_state_dict(c2d.state_dict(), strict=False).unexpected_keys == []
    # Training mode without dropout: deterministic, and BN normalises with batch statistics.
    x = clip(n=2, frames=8, height=48, width=48)
    with torch.no_grad():
        expected = c2d(x)
        for got, want in zip(silent(x), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(active(x).main, expected.main, rtol=1e-3, atol=1e-3)


def test_tsm_has_the_c2d_weights_and_shifts():
    tsm = sifa.create_model("tsm_resnet18", zero_init_residual=False, dropout=0.0)
    c2d = sifa.create_model("c2d_resnet18", zero_init_residual=False, dropout=0.0)
    assert set(tsm.state_dict()) == set(c2d.state_dict())
    tsm.load_state_dict(c2d.state_dict())
    x = clip()
    with torch.no_grad():
        assert not torch.allclose(tsm(x).main, c2d(x).main, rtol=1e-3, atol=1e-3)


def test_zero_offsets_switch_removes_every_offset_conv():
    model = sifa.create_model("sifa_resnet18", offsets="zero", num_classes=3)
    blocks = [m for m in model.modules() if isinstance(m, InterFrameAttention)]
    assert blocks and all(b.offset_mode == "zero" and b.offset_conv is None for b in blocks)
    assert not any("offset_conv" in k for k in model.state_dict())


def test_reset_classifier():
    model = sifa.create_model("sifa_resnet18", num_classes=4)
    model.reset_classifier(9)
    assert model.fc.out_features == model.fc_dual.out_features == model.num_classes == 9
    assert model.eval()(clip(n=1)).shape == (1, 9)


@pytest.mark.parametrize("family", ["sifa", "c2d", "tsm"])
def test_base_width_scales_every_stage(family):
    narrow = sifa.create_model(f"{family}_resnet18", num_classes=3, base_width=16)
    wide = sifa.create_model(f"{family}_resnet18", num_classes=3)
    assert narrow.conv1.out_channels == 16 and wide.conv1.out_channels == 64
    assert narrow.fc.in_features == 128 and narrow.fc_dual.in_features == 128
    for name in ("layer1", "layer2", "layer3", "layer4", "layer4_dual"):
        out_narrow = getattr(narrow, name)[-1].conv2.out_channels
        assert out_narrow * 4 == getattr(wide, name)[-1].conv2.out_channels
    # Parameters scale roughly with the square of the width.
    n_narrow = sum(p.numel() for p in narrow.parameters())
    n_wide = sum(p.numel() for p in wide.parameters())
    assert 10 < n_wide / n_narrow < 17
    assert narrow(clip()).main.shape == (2, 3)
