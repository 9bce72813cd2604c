"""Inflating ImageNet 2D Swin checkpoints (the reference release's and timm >= 0.9's key
layouts) into the per-frame Swin and SIFA-Transformer models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from sifa.models import CheckpointError, create_model
from sifa.models.weights import (
    inflate_swin_state_dict,
    load_2d_swin_weights,
    load_2d_weights,
)

BUFFERS = ("relative_position_index", "attn_mask")
ADDED_PARTS = (".sifa.", ".sifa_norm.", ".temporal_conv.")


def new_model(name, seed=0, **options):
    """``create_model(name, **options)`` with random normal values in place of Swin's init
    (truncated normals take seconds on CPU): what the loader leaves is still told apart."""
    with torch.device("meta"):
        model = create_model(name, **options)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            value.normal_(generator=gen)
    return model


def reference_swin_shapes(
    embed_dim=96,
    depths=(2, 2, 6, 2),
    heads=(3, 6, 12, 24),
    window=7,
    patch=4,
    mlp_ratio=4,
    num_classes=1000,
    image_size=224,
) -> dict[str, tuple]:
    """Key -> shape of the Swin reference release's 2D state dict (Swin-T by default), written
    out from its definition, with the buffers it saves: every block's
    ``attn.relative_position_index`` and, in the shifted blocks of stages whose map is larger
    than the window, ``attn_mask``."""
    shapes = {"patch_embed.proj.weight": (embed_dim, 3, patch, patch)}
    for name in ("patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"):
        shapes[name] = (embed_dim,)
    dim, resolution, n = embed_dim, image_size // patch, window * window
    for i, (depth, h) in enumerate(zip(depths, heads, strict=True)):
        hidden = int(dim * mlp_ratio)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}"
            shapes[f"{p}.norm1.weight"] = shapes[f"{p}.norm1.bias"] = (dim,)
            shapes[f"{p}.attn.relative_position_bias_table"] = ((2 * window - 1) ** 2, h)
            shapes[f"{p}.attn.relative_position_index"] = (n, n)
            shapes[f"{p}.attn.qkv.weight"] = (3 * dim, dim)
            shapes[f"{p}.attn.qkv.bias"] = (3 * dim,)
            shapes[f"{p}.attn.proj.weight"] = (dim, dim)
            shapes[f"{p}.attn.proj.bias"] = (dim,)
            shapes[f"{p}.norm2.weight"] = shapes[f"{p}.norm2.bias"] = (dim,)
            shapes[f"{p}.mlp.fc1.weight"] = (hidden, dim)
            shapes[f"{p}.mlp.fc1.bias"] = (hidden,)
            shapes[f"{p}.mlp.fc2.weight"] = (dim, hidden)
            shapes[f"{p}.mlp.fc2.bias"] = (dim,)
            if j % 2 == 1 and resolution > window:
                shapes[f"{p}.attn_mask"] = ((resolution // window) ** 2, n, n)
        if i < len(depths) - 1:
            shapes[f"layers.{i}.downsample.norm.weight"] = (4 * dim,)
            shapes[f"layers.{i}.downsample.norm.bias"] = (4 * dim,)
            shapes[f"layers.{i}.downsample.reduction.weight"] = (2 * dim, 4 * dim)
            dim, resolution = 2 * dim, resolution // 2
    shapes["norm.weight"] = shapes["norm.bias"] = (dim,)
    shapes["head.weight"] = (num_classes, dim)
    shapes["head.bias"] = (num_classes,)
    return shapes


def random_swin_checkpoint(seed=0, **hyper) -> dict[str, torch.Tensor]:
    """Distinct random values for every parameter; index and mask buffers of the right kind."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in reference_swin_shapes(**hyper).items():
        if key.endswith("relative_position_index"):
            state[key] = torch.randint(0, 169, shape, generator=gen)
        elif key.endswith("attn_mask"):
            state[key] = -100.0 * torch.randint(0, 2, shape, generator=gen).float()
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


def to_timm_layout(state):
    """timm >= 0.9's keys: patch merging at the start of the next stage, ``head.fc``; timm
    does not save ``attn_mask``."""
    out = {}
    for key, value in state.items():
        if key.endswith("attn_mask"):
            continue
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) + 1)
        elif parts[0] == "head":
            parts.insert(1, "fc")
        out[".".join(parts)] = value
    return out


@pytest.fixture(scope="module")
def swin_t_state():
    return random_swin_checkpoint()


@pytest.fixture(scope="module")
def swin_t_files(swin_t_state, tmp_path_factory):
    folder = tmp_path_factory.mktemp("swin")
    pth = folder / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": swin_t_state}, pth)  # nested under "model", as the release does
    safetensors = folder / "swin_tiny.safetensors"
    save_file(swin_t_state, safetensors)
    return {".pth": pth, ".safetensors": safetensors}


def check_loaded(model, state, temporal_init="center", skip=()):
    """Every 2D value in the model key of the same name; the patch embedding inflated."""
    weights = model.state_dict()
    for key, value in state.items():
        if key.endswith(BUFFERS):
            assert key not in weights
            continue
        if key.startswith(skip):
            continue
        target = weights[key]
        if key == "patch_embed.proj.weight":
            assert target.shape == (96, 3, 4, 4, 4)
            if temporal_init == "center":
                assert torch.equal(target[:, :, 2], value)
                assert torch.count_nonzero(target[:, :, [0, 1, 3]]) == 0
            else:
                for tap in range(4):
                    torch.testing.assert_close(target[:, :, tap], value / 4)
        else:
            assert torch.equal(target, value), key


@pytest.mark.parametrize(
    ("name", "suffix", "temporal_init"),
    [
        ("swin_t", ".pth", "center"),
        ("sifa_swin_t", ".safetensors", "center"),
        ("sifa_swin_t", ".pth", "average"),
    ],
)
def test_every_2d_weight_lands_where_it_should(
    swin_t_state, swin_t_files, name, suffix, temporal_init
):
    model = new_model(name, num_classes=1000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    missing = load_2d_swin_weights(model, swin_t_files[suffix], temporal_init=temporal_init)
    check_loaded(model, swin_t_state, temporal_init)
    added = sorted(k for k in before if any(part in k for part in ADDED_PARTS))
    assert missing == added
    assert bool(added) == name.startswith("sifa_")
    if added:
        assert any(".sifa.offset_conv." in k for k in added)
        assert any(".temporal_conv." in k for k in added)
    for key in missing:
        assert torch.equal(model.state_dict()[key], before[key])  # untouched
    # Every other model key came from the checkpoint.
    assert set(before) - set(missing) == {k for k in swin_t_state if not k.endswith(BUFFERS)}


def test_timm_layout_loads_to_the_same_model(swin_t_state, tmp_path):
    timm_state = to_timm_layout(swin_t_state)
    assert "layers.3.downsample.reduction.weight" in timm_state
    assert "layers.0.downsample.norm.weight" not in timm_state
    assert "head.fc.weight" in timm_state
    path = tmp_path / "timm.safetensors"
    save_file(timm_state, path)
    model = new_model("swin_t", num_classes=1000)
    assert load_2d_swin_weights(model, path) == []
    check_loaded(model, swin_t_state)


def test_classifier_of_another_class_count_is_left_at_init(swin_t_state):
    model = new_model("sifa_swin_t", num_classes=400)
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    missing = inflate_swin_state_dict(model, swin_t_state)
    assert {"head.weight", "head.bias"} <= set(missing)
    assert all(k.startswith("head.") or any(p in k for p in ADDED_PARTS) for k in missing)
    assert torch.equal(model.head.weight, head["weight"])
    assert torch.equal(model.head.bias, head["bias"])
    check_loaded(model, swin_t_state, skip=("head.",))


def cubic_resize_matrix(old: int, new: int, a: float = -0.75) -> torch.Tensor:
    """``(new, old)`` weights of 1D cubic convolution (Keys' kernel, parameter ``a``) from
    ``old`` samples to ``new``, pixel centres aligned (``align_corners=False``), taps beyond the
    ends reading the end sample."""

    def kernel(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    matrix = torch.zeros(new, old, dtype=torch.float64)
    for i in range(new):
        source = (i + 0.5) * old / new - 0.5
        base = math.floor(source)
        for tap in range(base - 1, base + 3):
            matrix[i, min(max(tap, 0), old - 1)] += kernel(source - tap)
    return matrix


def test_bias_tables_are_interpolated_for_another_window(swin_t_state):
    state = dict(swin_t_state)
    offsets = torch.arange(13.0) - 6  # relative offsets -6 .. 6 of a 7 x 7 window
    dy, dx = offsets[:, None, None], offsets[None, :, None]  # table row = (dy+6)*13 + (dx+6)
    slopes_y, slopes_x = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.5, 0.25, -0.75])
    intercept = torch.tensor([0.1, -0.2, 0.3])
    linear = (slopes_y * dy + slopes_x * dx + intercept).reshape(169, 3)
    constant = torch.full((169, 6), 0.375)
    state["layers.0.blocks.0.attn.relative_position_bias_table"] = linear
    state["layers.1.blocks.1.attn.relative_position_bias_table"] = constant
    model = new_model("swin_t", num_classes=1000, window_size=8)
    assert inflate_swin_state_dict(model, state) == []
    weights = model.state_dict()
    heads = {0: 3, 1: 6, 2: 12, 3: 24}
    for key, value in weights.items():
        if key.endswith("relative_position_bias_table"):
            assert value.shape == (225, heads[int(key.split(".")[1])]), key

    torch.testing.assert_close(
        weights["layers.1.blocks.1.attn.relative_position_bias_table"], torch.full((225, 6), 0.375)
    )

    table = weights["layers.0.blocks.0.attn.relative_position_bias_table"].double()
    grid = table.reshape(15, 15, 3)  # [dy + 7, dx + 7, head] for offsets -7 .. 7
    # Exactly separable cubic convolution of the 13 x 13 grid along dy and along dx.
    m = cubic_resize_matrix(13, 15)
    source = linear.double().reshape(13, 13, 3)
    expected = torch.einsum("yi,ijh,xj->yxh", m, source, m)
    torch.testing.assert_close(grid, expected, atol=1e-5, rtol=1e-5)
    # Still linear in the offsets: pixel centres aligned, offset d' of the 8 x 8 window sits
    # at d' * 13 / 15 of the old grid. Bicubic with a = -0.75 reproduces constants exactly
    # but linear ramps only to within about a tenth of the slope, plus clamping at the
    # borders (two rows and columns each side), so the check is loose there.
    new = (torch.arange(15.0) - 7).double() * 13 / 15
    ramp = slopes_y.double() * new[:, None, None] + slopes_x.double() * new[None, :, None]
    ramp = ramp + intercept.double()
    error = (grid - ramp).abs()
    scale = slopes_y.abs() + slopes_x.abs()
    assert (error[2:-2, 2:-2] <= 0.1 * scale).all()
    assert (error <= 0.5 * scale).all()
    # The centre (offset 0, 0) falls on a sample: exact; and dy, dx are not swapped.
    torch.testing.assert_close(grid[7, 7].float(), intercept)
    rise_y = (grid[12, 7] - grid[2, 7]) / (10 * 13 / 15)
    rise_x = (grid[7, 12] - grid[7, 2]) / (10 * 13 / 15)
    torch.testing.assert_close(rise_y.float(), slopes_y, atol=0.05, rtol=0)
    torch.testing.assert_close(rise_x.float(), slopes_x, atol=0.05, rtol=0)


@pytest.mark.parametrize("temporal_init", ["center", "average"])
def test_static_clip_gives_the_2d_patch_tokens(swin_t_state, temporal_init):
    model = new_model("swin_t", num_classes=1000)
    inflate_swin_state_dict(model, swin_t_state, temporal_init=temporal_init)
    frame = torch.randn(2, 3, 32, 36, generator=torch.Generator().manual_seed(3))
    clip = frame.unsqueeze(2).expand(-1, -1, 4, -1, -1)
    with torch.no_grad():
        tokens = model.patch_embed(clip)
    assert tokens.shape == (2, 1, 8, 9, 96)
    s = swin_t_state
    expected = F.conv2d(frame, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=4)
    expected = F.layer_norm(
        expected.permute(0, 2, 3, 1),
        (96,),
        s["patch_embed.norm.weight"],
        s["patch_embed.norm.bias"],
    )
    torch.testing.assert_close(tokens[:, 0], expected, atol=1e-4, rtol=1e-4)


def test_unknown_temporal_init_is_named(swin_t_state, swin_t_files):
    model = new_model("swin_t", num_classes=1000)
    with pytest.raises(ValueError, match=r"temporal_init .* got 'middle'"):
        inflate_swin_state_dict(model, swin_t_state, temporal_init="middle")
    with pytest.raises(ValueError, match=r"got 'first'"):
        load_2d_swin_weights(model, swin_t_files[".pth"], temporal_init="first")


def test_missing_file_is_named(tmp_path):
    model = new_model("swin_t", num_classes=1000)
    with pytest.raises(CheckpointError, match=r"weight file not found: .*nothing.pth"):
        load_2d_swin_weights(model, tmp_path / "nothing.pth")


class Payload:
    pass


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": {"norm.weight": torch.zeros(768)}, "config": Payload()}, path)
    model = new_model("swin_t", num_classes=1000)
    with pytest.raises(CheckpointError, match=r"pickled.pth needs pickled code to load"):
        load_2d_swin_weights(model, path)


def test_swin_b_checkpoint_into_swin_t_names_both_shapes():
    with torch.device("meta"):  # shapes only: the mismatch is found before anything is copied
        swin_b = {
            k: torch.empty(shape)
            for k, shape in reference_swin_shapes(
                embed_dim=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32)
            ).items()
        }
    model = new_model("swin_t", num_classes=1000)
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint key 'patch_embed.proj.weight' has shape \(128, 3, 4, 4\), which cannot "
        r"fill model key 'patch_embed.proj.weight' of shape \(96, 3, 4, 4, 4\)",
    ):
        inflate_swin_state_dict(model, swin_b)


def test_shape_mismatch_in_timm_layout_names_both_keys(swin_t_state, tmp_path):
    state = to_timm_layout(swin_t_state)
    state["layers.2.downsample.reduction.weight"] = torch.zeros(384, 384)
    path = tmp_path / "bad.safetensors"
    save_file(state, path)
    model = new_model("swin_t", num_classes=1000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=r"bad.safetensors: checkpoint key 'layers.2.downsample.reduction.weight' has shape "
        r"\(384, 384\), which cannot fill model key 'layers.1.downsample.reduction.weight' of "
        r"shape \(384, 768\)",
    ):
        load_2d_swin_weights(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing copied


def test_deeper_checkpoint_is_refused_unless_not_strict(swin_t_state):
    # Swin-S: 18 blocks in stage 3. Its first 6 have Swin-T's shapes.
    swin_s = {}
    for key, shape in reference_swin_shapes(depths=(2, 2, 18, 2)).items():
        swin_s[key] = swin_t_state[key] if key in swin_t_state else torch.zeros(shape)
    model = new_model("swin_t", num_classes=1000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=r"no place in the model: layers\.2\.blocks\.6\.attn\.proj\.bias, .* and \d+ more",
    ) as error:
        inflate_swin_state_dict(model, swin_s)
    assert not any(buffer in str(error.value) for buffer in BUFFERS)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing copied
    assert inflate_swin_state_dict(model, swin_s, strict=False) == []
    check_loaded(model, swin_t_state)


def test_extra_key_in_a_file_is_named_with_the_path(swin_t_state, tmp_path):
    state = dict(swin_t_state)
    state["layers.3.blocks.2.norm1.weight"] = torch.zeros(768)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    model = new_model("swin_t", num_classes=1000)
    with pytest.raises(
        CheckpointError,
        match=r"extra.pth: checkpoint keys with no place in the model: "
        r"layers.3.blocks.2.norm1.weight \(.*\); pass strict=False",
    ):
        load_2d_swin_weights(model, path)
    assert load_2d_swin_weights(model, path, strict=False) == []
    check_loaded(model, swin_t_state)


def torchvision_resnet18_state(seed=0) -> dict[str, torch.Tensor]:
    """torchvision's 2D ResNet-18 keys, written out from its definition, with random values."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, channels):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)

    bn("bn1", 64)
    in_channels = 64
    for layer, planes in enumerate((64, 128, 256, 512), 1):
        for index in range(2):
            prefix = f"layer{layer}.{index}"
            shapes[f"{prefix}.conv1.weight"] = (planes, in_channels, 3, 3)
            bn(f"{prefix}.bn1", planes)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{prefix}.bn2", planes)
            if index == 0 and in_channels != planes:
                shapes[f"{prefix}.downsample.0.weight"] = (planes, in_channels, 1, 1)
                bn(f"{prefix}.downsample.1", planes)
            in_channels = planes
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 512), (1000,)
    state = {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}
    state.update({k.replace("running_var", "num_batches_tracked"): torch.tensor(5)
                  for k in shapes if k.endswith("running_var")})  # fmt: skip
    return state


def test_load_2d_weights_dispatches_by_model_class(swin_t_state, swin_t_files, tmp_path):
    resnet_state = torchvision_resnet18_state()
    path = tmp_path / "resnet18.safetensors"
    save_file(resnet_state, path)
    resnet = create_model("c2d_resnet18", num_classes=1000)
    missing = load_2d_weights(resnet, path)
    weights = resnet.state_dict()
    assert torch.equal(weights["conv1.weight"][:, :, 2], resnet_state["conv1.weight"])
    assert torch.count_nonzero(weights["conv1.weight"][:, :, [0, 1, 3]]) == 0
    assert torch.equal(
        weights["layer3.1.conv2.weight"][:, :, 0], resnet_state["layer3.1.conv2.weight"]
    )
    assert torch.equal(weights["fc.weight"], resnet_state["fc.weight"])
    assert not set(missing) & set(resnet_state)
    with pytest.raises(TypeError, match=r"temporal_init applies to Swin models only"):
        load_2d_weights(resnet, path, temporal_init="center")

    swin = new_model("sifa_swin_t", num_classes=1000)
    missing = load_2d_weights(swin, swin_t_files[".pth"], temporal_init="average")
    assert missing and all(any(p in k for p in ADDED_PARTS) for k in missing)
    check_loaded(swin, swin_t_state, "average")

    with pytest.raises(CheckpointError, match=r"Linear"):
        load_2d_weights(nn.Linear(3, 4), path)
