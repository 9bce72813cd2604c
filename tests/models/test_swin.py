"""SIFA-Transformer and the per-frame Swin baselines: structure, window attention against a
slow loop, the added parts starting as the identity, and the switches."""

import math

import pytest
import torch
import torch.nn.functional as F

from sifa.models import classification_loss, create_model, list_models
from sifa.models.swin import PatchMerging, SwinBlock, SwinVideo, TemporalConv
from sifa.nn import InterFrameAggregation

from loop_reference import slow_inter_frame_attention

SWIN_MODELS = ["sifa_swin_b", "sifa_swin_s", "sifa_swin_t", "swin_b", "swin_s", "swin_t"]


def clip(n=2, frames=8, height=32, width=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, frames, height, width, generator=gen)


def _randomise_added_parts(model, seed=1):
    """Non-zero SIFA norms, offset convs and temporal convs, so they change the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(part in name for part in ("sifa", "temporal_conv")):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def test_registry_lists_the_swin_family():
    assert list_models("*swin*") == SWIN_MODELS


@pytest.mark.parametrize("name", SWIN_MODELS)
def test_train_step_odd_size_then_eval_on_another_clip_length(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    model.train()
    x = clip(frames=8, height=37, width=45)
    loss = classification_loss(model(x), torch.tensor([1, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        logits = model(clip(n=1, frames=4, height=64, width=48, seed=2))
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "params_2d", "patch_dim"),
    [("swin_t", 28_288_354, 96), ("swin_s", 49_606_258, 96), ("swin_b", 87_768_224, 128)],
)
def test_parameter_counts_are_the_2d_swin_ones_plus_the_tubelet(name, params_2d, patch_dim):
    # The Swin papers' counts with 1000 classes; the tubelet adds 3 more 4x4 RGB kernels.
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    count = sum(p.numel() for p in model.parameters())
    assert count == params_2d + patch_dim * 3 * 4 * 4 * 3


def test_variants_have_the_spec_widths_depths_and_heads():
    for name, dim, depths, heads in [
        ("sifa_swin_t", 96, (2, 2, 6, 2), (3, 6, 12, 24)),
        ("sifa_swin_s", 96, (2, 2, 18, 2), (3, 6, 12, 24)),
        ("sifa_swin_b", 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    ]:
        with torch.device("meta"):
            model = create_model(name)
        assert [len(stage.blocks) for stage in model.layers] == list(depths)
        assert [stage.blocks[0].attn.num_heads for stage in model.layers] == list(heads)
        assert [stage.blocks[0].norm1.normalized_shape[0] for stage in model.layers] == [
            dim * 2**i for i in range(4)
        ]
        for stage in model.layers:
            for index, block in enumerate(stage.blocks):
                # SIFA in every block with shift 0, the temporal conv in every shifted block.
                assert block.shifted == (index % 2 == 1)
                assert (block.sifa is not None) == (index % 2 == 0)
                assert (block.temporal_conv is not None) == (index % 2 == 1)


def test_added_parts_start_as_the_identity():
    """``sifa_swin_t`` holding ``swin_t``'s weights, its added parts at their zero init, gives
    the same logits; non-zero added parts change them."""
    torch.manual_seed(0)
    plain = create_model("swin_t", num_classes=7).eval()
    sifa = create_model("sifa_swin_t", num_classes=7).eval()
    result = sifa.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(
        ".sifa." in k or ".sifa_norm." in k or ".temporal_conv." in k for k in result.missing_keys
    )
    x = clip(frames=8, height=40, width=40)
    with torch.no_grad():
        expected = plain(x)
        torch.testing.assert_close(sifa(x), expected, rtol=0, atol=0)
        _randomise_added_parts(sifa)
        assert (sifa(x) - expected).abs().max() > 1e-3


def test_per_frame_swin_averages_the_logits_of_its_time_steps():
    torch.manual_seed(0)
    model = create_model("swin_t", num_classes=4).eval()
    x = clip(n=1, frames=12, height=33, width=35)
    with torch.no_grad():
        parts = [model(x[:, :, i : i + 4]) for i in (0, 4, 8)]
        torch.testing.assert_close(model(x), torch.stack(parts).mean(0), rtol=1e-5, atol=1e-6)


def test_zero_offsets_whatever_the_input():
    torch.manual_seed(0)
    zero = create_model("sifa_swin_t", num_classes=3, offsets="zero").eval()
    sifas = [m for m in zero.modules() if isinstance(m, InterFrameAggregation)]
    assert sifas and all(m.offset_conv is None for m in sifas)
    gen = torch.Generator().manual_seed(3)
    for m in sifas:
        a, b = (100 * torch.randn(2, m.channels, 5, 6, generator=gen) for _ in range(2))
        offsets = m.offsets(a, b)
        assert offsets.shape == (2, 18, 5, 6) and torch.count_nonzero(offsets) == 0
    # The same network with deformable offsets whose conv weights are zero: same logits.
    deformable = create_model("sifa_swin_t", num_classes=3).eval()
    _randomise_added_parts(zero)
    deformable.load_state_dict(zero.state_dict(), strict=False)
    x = clip(n=1, frames=8)
    with torch.no_grad():
        torch.testing.assert_close(zero(x), deformable(x), rtol=1e-5, atol=1e-6)
        for m in deformable.modules():
            if isinstance(m, InterFrameAggregation):
                m.offset_conv.weight.normal_(0, 0.05)
        assert (zero(x) - deformable(x)).abs().max() > 1e-4


# --- Window attention against a slow loop --------------------------------------------------


def slow_window_attention(block: SwinBlock, frames: torch.Tensor) -> torch.Tensor:
    """Swin's shifted-window attention, one query at a time, from the definition: pad to whole
    windows, roll by the shift, attend within the window to the tokens that were not wrapped
    around differently, with the bias looked up by relative offset; roll back, crop."""
    attn = block.attn
    b, h, w, c = frames.shape
    wh, ww = min(block.window_size, h), min(block.window_size, w)
    sh = wh // 2 if block.shifted and h > block.window_size else 0
    sw = ww // 2 if block.shifted and w > block.window_size else 0
    hp, wp = math.ceil(h / wh) * wh, math.ceil(w / ww) * ww
    x = torch.zeros(b, hp, wp, c, dtype=frames.dtype)
    x[:, :h, :w] = frames
    x = torch.roll(x, (-sh, -sw), (1, 2))
    heads = attn.num_heads
    d = c // heads
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    out = torch.zeros_like(x)
    table = attn.relative_position_bias_table
    side = 2 * block.window_size - 1
    for y in range(hp):
        for xx in range(wp):
            y0, x0 = (y // wh) * wh, (xx // ww) * ww
            keys = [
                (ky, kx)
                for ky in range(y0, y0 + wh)
                for kx in range(x0, x0 + ww)
                # a token rolled in from the far side only sees tokens rolled in with it
                if (ky >= hp - sh) == (y >= hp - sh) and (kx >= wp - sw) == (xx >= wp - sw)
            ]
            for head in range(heads):
                sl = slice(head * d, (head + 1) * d)
                kk = torch.stack([k[:, ky, kx, sl] for ky, kx in keys], 1)  # (b, n, d)
                vv = torch.stack([v[:, ky, kx, sl] for ky, kx in keys], 1)
                bias = torch.stack(
                    [
                        table[
                            (y - ky + block.window_size - 1) * side
                            + (xx - kx + block.window_size - 1),
                            head,
                        ]
                        for ky, kx in keys
                    ]
                )
                scores = (kk @ q[:, y, xx, sl].unsqueeze(-1)).squeeze(-1) / math.sqrt(d) + bias
                out[:, y, xx, sl] = (scores.softmax(-1).unsqueeze(-1) * vv).sum(1)
    out = out @ attn.proj.weight.T + attn.proj.bias
    return torch.roll(out, (sh, sw), (1, 2))[:, :h, :w]


@pytest.mark.parametrize(
    ("height", "width", "window", "shifted"),
    [(8, 8, 4, False), (8, 8, 4, True), (10, 9, 4, True), (3, 5, 4, True), (7, 6, 7, False)],
)
def test_window_attention_matches_a_slow_loop(height, width, window, shifted):
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window, shifted=shifted).double().eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1)
        frames = torch.randn(2, height, width, 8, dtype=torch.float64)
        torch.testing.assert_close(
            block.window_attention(frames), slow_window_attention(block, frames)
        )


def test_temporal_conv_is_a_3x1x1_conv_over_time():
    torch.manual_seed(0)
    conv = TemporalConv(6)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
    tokens = torch.randn(2, 5, 3, 4, 6)  # (N, T, H, W, C)
    expected = F.conv3d(
        tokens.permute(0, 4, 1, 2, 3), conv.weight[..., None, None], conv.bias, padding=(1, 0, 0)
    ).permute(0, 2, 3, 4, 1)
    torch.testing.assert_close(conv(tokens), expected, rtol=1e-5, atol=1e-5)


def test_patch_merging_concatenates_2x2_neighbours_in_the_reference_order():
    torch.manual_seed(0)
    merge = PatchMerging(3)
    tokens = torch.randn(1, 2, 5, 3, 3)  # odd height: zero-padded
    out = merge(tokens)
    assert out.shape == (1, 2, 3, 2, 6)
    padded = torch.zeros(1, 2, 6, 4, 3)
    padded[:, :, :5, :3] = tokens
    for i in range(3):
        for j in range(2):
            quad = [padded[:, :, 2 * i, 2 * j], padded[:, :, 2 * i + 1, 2 * j],
                    padded[:, :, 2 * i, 2 * j + 1], padded[:, :, 2 * i + 1, 2 * j + 1]]  # fmt: skip
            expected = merge.reduction(merge.norm(torch.cat(quad, -1)))
            torch.testing.assert_close(out[:, :, i, j], expected)


def test_sifa_block_adds_the_normalised_aggregate_to_all_but_the_last_frame():
    torch.manual_seed(0)
    block = SwinBlock(8, 2, 4, shifted=False, sifa=dict(normalize="softmax")).eval()
    _randomise_added_parts(block)
    x = torch.randn(1, 3, 4, 3, 8)  # (N, T, H, W, C)
    n, t, h, w, c = x.shape
    with torch.no_grad():
        after_attention = x + block.window_attention(block.norm1(x).view(n * t, h, w, c)).view(
            x.shape
        )
        expected = after_attention.clone()
        for step in range(t - 1):
            current = after_attention[:, step].permute(0, 3, 1, 2)
            following = after_attention[:, step + 1].permute(0, 3, 1, 2)
            saliency = torch.sigmoid(following - current) * following + following
            offsets = F.conv2d(saliency, block.sifa.offset_conv.weight, padding=1)
            attended = slow_inter_frame_attention(
                current, following, offsets, scale=1 / c, normalize="softmax"
            )
            expected[:, step] += block.sifa_norm(attended.permute(0, 2, 3, 1))
        expected = expected + block.mlp(block.norm2(expected))
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = create_model("sifa_swin_t", num_classes=3, drop_path_rate=0.0, dropout=0.0)
    _randomise_added_parts(model)
    x, labels = clip(n=2, frames=8), torch.tensor([0, 2])

    def loss_and_grads():
        model.zero_grad()
        loss = classification_loss(model(x), labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads()
    model.set_gradient_checkpointing(True)
    loss_ckpt, grads_ckpt = loss_and_grads()
    torch.testing.assert_close(loss_ckpt, loss)
    for g, gc in zip(grads, grads_ckpt, strict=True):
        torch.testing.assert_close(gc, g, rtol=1e-4, atol=1e-6)
    switched = create_model("swin_t", gradient_checkpointing=True)
    assert all(stage.gradient_checkpointing for stage in switched.layers)


def test_drop_path_drops_whole_clips_in_training_only():
    torch.manual_seed(0)
    block = SwinBlock(8, 2, 4, shifted=False, drop_path=0.5)
    block.mlp.fc2.bias.data.fill_(1.0)  # a branch that is never zero
    x = torch.zeros(64, 2, 4, 4, 8)
    out = block(x)
    per_clip = out.flatten(1)
    changed = per_clip.abs().amax(1) > 0
    # Whole clips keep the MLP branch (non-zero output) or drop it (zero output).
    assert 10 < int(changed.sum()) < 64
    block.eval()
    assert (block(x).flatten(1).abs().amax(1) > 0).all()


def test_stochastic_depth_rises_linearly_to_the_rate():
    with torch.device("meta"):
        model = create_model("sifa_swin_b")
    rates = [b.drop_path.rate for stage in model.layers for b in stage.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.5) and len(rates) == 24
    assert rates == pytest.approx([0.5 * i / 23 for i in range(24)])


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.zeros(1, 3, 6, 32, 32), "multiple of tubelet_size=4"),
        (torch.zeros(1, 3, 2, 32, 32), "multiple of tubelet_size=4"),
        (torch.zeros(1, 1, 4, 32, 32), "RGB clips"),
        (torch.zeros(3, 4, 32, 32), "RGB clips"),
        (torch.zeros(1, 3, 4, 3, 32), "at least 4 pixels"),
    ],
)
def test_bad_clips_are_named(x, message):
    model = create_model("swin_t", num_classes=2)
    with pytest.raises(ValueError, match=message):
        model(x)


@pytest.mark.parametrize(
    ("name", "switches", "error", "message"),
    [
        ("sifa_swin_t", {"offsets": "learned"}, ValueError, "offsets must be one of"),
        ("sifa_swin_t", {"drop_path_rate": 1.5}, ValueError, "drop_path_rate"),
        ("swin_t", {"window_size": 0}, ValueError, "window_size"),
        ("swin_t", {"offsets": "zero"}, TypeError, "swin_t has no switch 'offsets'"),
        ("sifa_swin_t", {"temporal_conv": "yes"}, TypeError, "temporal_conv"),
        ("sifa_swin_t", {"sifa_groups": 5}, ValueError, "groups=5 must divide"),
    ],
)
def test_bad_switches_are_named(name, switches, error, message):
    with pytest.raises(error, match=message):
        create_model(name, **switches)


def test_switches_change_the_structure():
    with torch.device("meta"):
        no_conv = create_model("sifa_swin_t", temporal_conv=False)
        other = create_model("sifa_swin_t", window_size=8, tubelet_size=2, sifa_kernel_size=5)
    assert not any(isinstance(m, TemporalConv) for m in no_conv.modules())
    assert other.patch_embed.proj.kernel_size == (2, 4, 4)
    assert other.layers[0].blocks[0].attn.relative_position_bias_table.shape == (15 * 15, 3)
    assert other.layers[0].blocks[0].sifa.offset_conv.out_channels == 2 * 25
    x = clip(n=1, frames=2, height=32, width=32)
    model = create_model("sifa_swin_t", tubelet_size=2, num_classes=2)
    assert model(x).shape == (1, 2)


def test_reset_classifier():
    model = create_model("swin_t", num_classes=3)
    model.reset_classifier(11)
    assert model.head.out_features == 11 and model.num_classes == 11
    assert isinstance(model, SwinVideo)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(0)


@pytest.mark.parametrize("name", ["sifa_swin_t", "swin_t"])
def test_forward_is_the_head_on_the_pooled_last_stage_features(name):
    """``forward_features`` gives the last stage's normalised tokens ``(N, T', H', W', C)``; the
    logits are the classifier on their mean over time and space."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    _randomise_added_parts(model)
    x = clip(n=2, frames=8, height=64, width=64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 2, 2, 2, model.num_features)  # 8/4 steps, 64/32 pixels
        expected = model.head(features.mean(dim=(1, 2, 3)))
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
