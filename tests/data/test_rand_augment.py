"""RandAugment on clips: every operation against PIL on uint8 images (or the release's numpy),
one draw per clip, the ranges of both operation sets, determinism and the config wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from sifa.data import AugmentOp, RandAugment, RandAugmentParams
from sifa.data.rand_augment import (
    CUTOUT_FILL,
    RELEASED_OPS,
    STANDARD_OPS,
    affine_nearest,
    cutout_box,
)
from sifa.data.transforms import Compose, Normalize, RandomErasing
from sifa.engine.builders import build_train_set
from sifa.engine.config import RandAugmentConfig, load_config

from training_fixtures import tiny_config

ALL_OPS = tuple(dict.fromkeys(STANDARD_OPS + RELEASED_OPS))
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")
# Operations that map each pixel on its own value (with clip-wide statistics at most).
POINTWISE = ("Identity", "Invert", "Posterize", "Solarize", "SolarizeAdd", "AutoContrast",
             "Equalize", "Brightness", "Color", "Contrast")  # fmt: skip


def uint8_image(height: int, width: int, seed: int = 0, low: int = 0, high: int = 256):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (3, height, width), generator=gen, dtype=torch.uint8)


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as float ``(3, H, W)`` on the 0..255 scale."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()


def ours(name: str, value, image: torch.Tensor) -> torch.Tensor:
    """Our operation on a one-frame clip of a uint8 image, on the 0..255 scale."""
    clip = image.float().div(255).unsqueeze(0)
    out = RandAugment().apply(clip, RandAugmentParams((AugmentOp(name, value),)))
    return out[0] * 255


def random_op(name: str, height: int, width: int, seed: int = 0, m: float = 7.0) -> AugmentOp:
    """Operation ``name`` at magnitude ``m`` of 10, from the set that has it."""
    torch.manual_seed(seed)
    ops = "standard" if name in STANDARD_OPS else "released"
    return RandAugment(1, m, ops=ops).op_params(name, height, width)


# --- operations against PIL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "pil"),
    [
        ("AutoContrast", None, ImageOps.autocontrast),
        ("Equalize", None, ImageOps.equalize),
        ("Invert", None, ImageOps.invert),
        *[("Posterize", bits, lambda im, b=bits: ImageOps.posterize(im, b)) for bits in (1, 4, 7)],
        *[
            ("Solarize", t, lambda im, t=t: ImageOps.solarize(im, t))
            for t in (0.0, 25.499999999999996, 100.5, 128, 230.4, 255.0, 256.0)
        ],
    ],
)
@pytest.mark.parametrize("low_high", [(0, 256), (40, 200), (90, 95)])
def test_uint8_operations_match_pil_exactly(name, value, pil, low_high):
    image = uint8_image(11, 14, seed=len(name), low=low_high[0], high=low_high[1])
    expected = from_pil(pil(to_pil(image)))
    torch.testing.assert_close(ours(name, value, image), expected, atol=1e-3, rtol=0)


def test_autocontrast_and_equalize_leave_flat_channels_and_handle_two_levels():
    image = uint8_image(9, 10)
    image[1] = 77  # one flat channel
    image[2] = torch.where(image[2] > 128, 200, 30).to(torch.uint8)  # two levels only
    for name, pil in (("AutoContrast", ImageOps.autocontrast), ("Equalize", ImageOps.equalize)):
        expected = from_pil(pil(to_pil(image)))
        torch.testing.assert_close(ours(name, None, image), expected, atol=1e-3, rtol=0)
    # A histogram whose last used level is mapped past 255 by the formula (PIL clips it).
    skewed = torch.zeros(3, 16, 16, dtype=torch.uint8)
    skewed[:, :, :3] = 5
    skewed[:, :, 3:] = torch.arange(13, dtype=torch.uint8) * 10
    expected = from_pil(ImageOps.equalize(to_pil(skewed)))
    torch.testing.assert_close(ours("Equalize", None, skewed), expected, atol=1e-3, rtol=0)


def test_posterize_to_zero_bits_is_black():
    # The release's Posterize at the top magnitude keeps 4 - 4 = 0 bits (PIL < 10 allowed it).
    assert ours("Posterize", 0, uint8_image(5, 6)).abs().max() == 0
    image = uint8_image(5, 6)
    assert torch.equal(ours("Posterize", 8, image), image.float())


@pytest.mark.parametrize("amount", [0.0, 37.4, 99.00000000000001, 110.0])
def test_solarize_add_matches_the_released_numpy(amount):
    image = uint8_image(12, 13)
    raw = image.permute(1, 2, 0).numpy()
    added = np.clip(raw.astype(np.int64) + amount, 0, 255).astype(np.uint8)
    expected = torch.from_numpy(np.where(raw < 128, added, raw)).permute(2, 0, 1).float()
    torch.testing.assert_close(ours("SolarizeAdd", amount, image), expected, atol=1e-3, rtol=0)


# PIL blends in uint8 and truncates (up to 1 level below ours), and its degenerate images are
# rounded to uint8 (the luma for Color; the mean luma, rounded to an integer, for Contrast; the
# smoothed image for Sharpness): that error, at most ``slack`` levels, is scaled by |1 - factor|.
ENHANCE_SLACK = {"Brightness": 0.0, "Color": 0.5, "Contrast": 1.0, "Sharpness": 1.0}


@pytest.mark.parametrize("name", ENHANCE)
@pytest.mark.parametrize("factor", [0.1, 0.55, 1.45, 1.9])
def test_enhance_operations_match_pil_up_to_its_uint8_rounding(name, factor):
    image = uint8_image(10, 13, seed=3)
    expected = from_pil(getattr(ImageEnhance, name)(to_pil(image)).enhance(factor))
    difference = ours(name, factor, image) - expected
    slack = abs(1 - factor) * ENHANCE_SLACK[name] + 1e-3
    assert difference.min() >= -slack and difference.max() <= 1 + slack
    if name == "Sharpness":  # the border keeps its values in both
        border = torch.ones(10, 13, dtype=torch.bool)
        border[1:-1, 1:-1] = False
        assert difference[:, border].abs().max() < 1e-3


def _pil_sample_points(matrix, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Where PIL's affine transform samples for every output pixel (pixel centres)."""
    a, b, c, d, e, f = matrix
    x, y = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return a * x + b * y + c, d * x + e * y + f


def _pil_rotation_matrix(degrees: float, height: int, width: int) -> tuple[float, ...]:
    """The inverse matrix ``Image.rotate`` builds (centre of the frame, no expansion)."""
    angle = -math.radians(degrees)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = width / 2.0, height / 2.0
    return (a, b, a * -cx + b * -cy + cx, -b, a, -b * -cx + a * -cy + cy)


@pytest.mark.parametrize(
    ("name", "value"),
    [("ShearX", 0.27), ("ShearX", -0.3), ("ShearY", 0.13), ("ShearY", -0.27),
     ("TranslateX", 3.7), ("TranslateX", -5.0), ("TranslateY", 2.5), ("TranslateY", -9.3),
     ("Rotate", 27.0), ("Rotate", -13.0), ("Rotate", 30.0), ("Rotate", 0.9)],
)  # fmt: skip
def test_geometric_operations_match_pil_nearest_affine(name, value):
    height, width = 23, 31
    image = uint8_image(height, width, seed=5, low=1)  # 0 only where the fill is
    matrix = {
        "ShearX": (1, value, 0, 0, 1, 0),
        "ShearY": (1, 0, 0, value, 1, 0),
        "TranslateX": (1, 0, value, 0, 1, 0),
        "TranslateY": (1, 0, 0, 0, 1, value),
    }.get(name) or _pil_rotation_matrix(value, height, width)
    pil = to_pil(image)
    if name == "Rotate":
        expected = from_pil(pil.rotate(value))
    else:
        expected = from_pil(pil.transform(pil.size, Image.AFFINE, matrix, Image.NEAREST))
    mismatch = (ours(name, value, image) != expected).any(0).numpy()
    # Only where a sample point lies on a pixel edge up to PIL's rounding may the two pick
    # different neighbours: PIL steps the coordinates along rows and columns in 16.16 fixed
    # point, an error of at most 2**-17 per coefficient and step.
    u, v = _pil_sample_points(matrix, height, width)
    eps = (height + width + 2) * 2.0**-17
    tie = (np.abs(u - np.round(u)) < eps) | (np.abs(v - np.round(v)) < eps)
    assert not (mismatch & ~tie).any()
    assert mismatch.sum() <= 3


def test_affine_nearest_against_a_per_pixel_loop():
    clip = torch.rand(2, 3, 7, 9)
    matrix = (0.9, 0.2, 1.3, -0.35, 1.1, -0.4)
    out = affine_nearest(clip, matrix, fill=-1.0)
    a, b, c, d, e, f = matrix
    for y in range(7):
        for x in range(9):
            u = math.floor(a * (x + 0.5) + b * (y + 0.5) + c)
            v = math.floor(d * (x + 0.5) + e * (y + 0.5) + f)
            inside = 0 <= u < 9 and 0 <= v < 7
            expected = clip[..., v, u] if inside else torch.full((2, 3), -1.0)
            assert torch.equal(out[..., y, x], expected)


@pytest.mark.parametrize("seed", range(3))
def test_cutout_box_is_the_released_pil_rectangle(seed):
    gen = np.random.default_rng(seed)
    for _ in range(50):
        height, width = gen.integers(5, 40, size=2)
        side = gen.uniform(0, 0.3571) * width
        cx, cy = gen.uniform(0, width), gen.uniform(0, height)
        # The release: corner int(max(0, c - side / 2)), far corner min(size, corner + side),
        # drawn with PIL's rectangle.
        x0, y0 = int(max(0, cx - side / 2.0)), int(max(0, cy - side / 2.0))
        x1, y1 = min(width, x0 + side), min(height, y0 + side)
        canvas = Image.new("L", (int(width), int(height)), 0)
        ImageDraw.Draw(canvas).rectangle((x0, y0, x1, y1), 255)
        expected = np.array(canvas) > 0
        top, left, h, w = cutout_box(cx, cy, side, int(height), int(width))
        got = np.zeros_like(expected)
        got[top : top + h, left : left + w] = True
        assert (got == expected).all()


def test_cutout_fills_the_box_in_every_frame():
    clip = torch.rand(3, 3, 10, 12)
    out = RandAugment().apply(clip, RandAugmentParams((AugmentOp("Cutout", (2, 5, 4, 3)),)))
    fill = torch.tensor(CUTOUT_FILL).view(3, 1, 1) / 255
    assert torch.allclose(out[..., 2:6, 5:8], fill.expand(3, 3, 4, 3))
    out[..., 2:6, 5:8] = clip[..., 2:6, 5:8]
    assert torch.equal(out, clip)


# --- draws and ranges ----------------------------------------------------------------------------


def _values(ops: str, name: str, m: float, levels: int, draws: int = 40, size=(50, 80)):
    augment = RandAugment(1, m, levels, ops)
    torch.manual_seed(0)
    return {augment.op_params(name, *size).value for _ in range(draws)}


def _assert_values(ops: str, m: float, levels: int, expected: dict) -> None:
    """Every value drawn for each operation is one of the expected ones, and all of them occur."""
    for name, values in expected.items():
        got = _values(ops, name, m, levels)
        if None in values:
            assert got == values, name
        else:
            assert sorted(got) == pytest.approx(sorted(values)), name


@pytest.mark.parametrize(("m", "levels"), [(10, 10), (5, 10), (27, 30)])
def test_standard_magnitudes_are_torchvisions(m, levels):
    f = m / levels
    expected = {
        "ShearX": {0.3 * f, -0.3 * f},
        "TranslateX": {float(int(150 / 331 * 80 * f)), -float(int(150 / 331 * 80 * f))},
        "TranslateY": {float(int(150 / 331 * 50 * f)), -float(int(150 / 331 * 50 * f))},
        "Rotate": {30 * f, -30 * f},
        "Contrast": {1 + 0.9 * f, 1 - 0.9 * f},
        "Posterize": {8 - round(4 * f)},
        "Solarize": {255 * (1 - f)},
        "Equalize": {None},
        "Identity": {None},
    }
    _assert_values("standard", m, levels, expected)


@pytest.mark.parametrize(("m", "levels"), [(30, 30), (27, 30), (9, 10)])
def test_released_magnitudes_are_the_releases(m, levels):
    f = m / levels
    expected = {
        "ShearY": {0.3 * f, -0.3 * f},
        "TranslateX": {0.4464 * f * 80, -0.4464 * f * 80},
        "TranslateY": {0.4464 * f * 50, -0.4464 * f * 50},
        "Rotate": {30 * f, -30 * f},
        "Sharpness": {1 - 0.9 * f, 1 + 0.9 * f},
        "Posterize": {4 - int(4 * f)},
        "Solarize": {256 - 256 * f},
        "SolarizeAdd": {110 * f},
        "Invert": {None},
    }
    _assert_values("released", m, levels, expected)
    # Cutout: a square of side 0.3571 f of the width, clipped at the frame edges.
    boxes = _values("released", "Cutout", m, levels, draws=200)
    side = int(0.3571 * f * 80) + 1
    assert max(h for _, _, h, _ in boxes) == max(w for _, _, _, w in boxes) == side
    assert all(top + h <= 50 and left + w <= 80 for top, left, h, w in boxes)


def test_draws_pick_with_replacement_from_the_whole_set():
    for ops, names in (("standard", STANDARD_OPS), ("released", RELEASED_OPS)):
        augment = RandAugment(n=2, m=5, ops=ops)
        torch.manual_seed(1)
        draws = [augment.get_params(16, 16).ops for _ in range(300)]
        assert {op.name for ops_ in draws for op in ops_} == set(names)
        assert any(first.name == second.name for first, second in draws)
        assert all(len(ops_) == 2 for ops_ in draws)


def test_the_same_seed_gives_the_same_draw_and_output():
    clip = torch.rand(4, 3, 20, 24)
    augment = RandAugment(n=3, m=27, levels=30, ops="released")
    results = []
    for seed in (7, 7, 8, 9, 10):
        torch.manual_seed(seed)
        params = augment.get_params(20, 24)
        torch.manual_seed(seed)
        results.append((params, augment(clip)))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
    assert torch.equal(augment.apply(clip, results[0][0]), results[0][1])
    assert len({params for params, _ in results[1:]}) > 1


@pytest.mark.parametrize("ops", ["standard", "released"])
def test_magnitude_zero_leaves_geometric_and_enhance_operations_as_identity(ops):
    clip = torch.rand(2, 3, 9, 11)
    augment = RandAugment(1, 0, ops=ops)
    torch.manual_seed(0)
    for name in (n for n in GEOMETRIC + ENHANCE + ("Identity",) if n in augment.names):
        for _ in range(4):  # both signs
            params = RandAugmentParams((augment.op_params(name, 9, 11),))
            assert torch.equal(augment.apply(clip, params), clip), name


# --- one draw per clip ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_OPS)
def test_identical_frames_stay_identical(name):
    frame = torch.rand(3, 13, 15)
    clip = frame.expand(5, 3, 13, 15).contiguous()
    out = RandAugment().apply(clip, RandAugmentParams((random_op(name, 13, 15),)))
    assert out.shape == clip.shape
    assert torch.equal(out, out[:1].expand_as(out))


@pytest.mark.parametrize("name", [n for n in ALL_OPS if n not in ("AutoContrast", "Equalize",
                                                                  "Contrast")])  # fmt: skip
def test_frame_independent_operations_act_on_each_frame_alone(name):
    clip = torch.rand(4, 3, 12, 10)
    params = RandAugmentParams((random_op(name, 12, 10, seed=2),))
    augment = RandAugment()
    frames = torch.stack([augment.apply(frame, params) for frame in clip])
    torch.testing.assert_close(augment.apply(clip, params), frames, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", POINTWISE)
def test_pointwise_operations_use_one_mapping_for_the_whole_clip(name):
    # Frame 1 holds the values of frame 0 mirrored, frame 2 darker values: with clip-wide
    # statistics frame 1 still mirrors frame 0 after the operation.
    frame = torch.rand(3, 8, 9)
    clip = torch.stack([frame, frame.flip(-1), frame * 0.3])
    out = RandAugment().apply(clip, RandAugmentParams((random_op(name, 8, 9),)))
    torch.testing.assert_close(out[1], out[0].flip(-1), atol=1e-6, rtol=0)


def test_clip_statistics_differ_from_per_frame_ones():
    # The release equalised each frame on its own; here the clip's histogram counts.
    # (32 x 32: PIL's equalisation leaves images under 256 pixels alone)
    dark, bright = torch.rand(3, 32, 32) * 0.3, 0.7 + torch.rand(3, 32, 32) * 0.3
    clip = torch.stack([dark, bright])
    augment = RandAugment()
    for name in ("AutoContrast", "Equalize"):
        params = RandAugmentParams((AugmentOp(name),))
        together = augment.apply(clip, params)
        alone = torch.stack([augment.apply(frame, params) for frame in clip])
        assert together[0].max() < alone[0].max()  # the dark frame stays darker than the bright


def test_works_on_views_and_keeps_the_input():
    clip = torch.rand(2, 2, 3, 10, 10)  # (views, T, C, H, W)
    before = clip.clone()
    augment = RandAugment(n=4, m=9)
    for seed in range(10):
        torch.manual_seed(seed)
        out = augment(clip)
        assert out.shape == clip.shape and out.dtype == clip.dtype
    assert torch.equal(clip, before)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: RandAugment(n=0), ValueError, r"n must be >= 1"),
        (lambda: RandAugment(n=1.5), TypeError, r"n must be an integer"),
        (lambda: RandAugment(m=11), ValueError, r"m must be in \[0\.0, 10"),
        (lambda: RandAugment(m=27, levels=30.0), TypeError, r"levels must be an integer"),
        (lambda: RandAugment(ops="timm"), ValueError, r"ops must be one of.*'timm'"),
        (lambda: RandAugment().op_params("Cutout", 8, 8), ValueError, r"'Cutout' is not one"),
        (lambda: RandAugment()(torch.rand(2, 1, 8, 8)), ValueError, r"\(\.\.\., 3, H, W\)"),
        (lambda: RandAugment()(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), TypeError, "float"),
        (
            lambda: RandAugment().apply(torch.rand(3, 4, 4), RandAugmentParams((AugmentOp("X"),))),
            ValueError,
            r"unknown operation 'X'",
        ),
    ],
)
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_repr_names_the_settings():
    assert repr(RandAugment(2, 27, 30, "released")) == (
        "RandAugment(n=2, m=27.0, levels=30, ops='released')"
    )


# --- the config ---------------------------------------------------------------------------------


def test_config_builds_a_train_set_with_per_item_deterministic_augmentation(tiny_data, tmp_path):
    # data.rand_augment={n: 2, m: 27, levels: 30, ops: released}, as in a YAML file
    released = RandAugmentConfig(n=2, m=27, levels=30, ops="released")
    config = tiny_config(tiny_data, tmp_path, data__rand_augment=released,
                         data__random_erasing=0.5)  # fmt: skip
    dataset = build_train_set(config, seed=3)
    steps = dataset.transform.transforms
    augment = next(step for step in steps if isinstance(step, RandAugment))
    assert (augment.n, augment.m, augment.levels, augment.ops) == (2, 27.0, 30, "released")
    kinds = [type(step) for step in steps]
    assert kinds.index(RandAugment) < kinds.index(Normalize) < kinds.index(RandomErasing)
    assert steps[kinds.index(RandomErasing)].p == 0.5

    first, label = dataset[1]
    assert first.shape == (3, 8, 32, 32)
    assert torch.equal(dataset[1][0], first) and dataset[1][1] == label
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1][0], first)
    dataset.set_epoch(0)
    assert torch.equal(dataset[1][0], first)
    assert not torch.equal(build_train_set(config, seed=4)[1][0], first)
    plain = build_train_set(tiny_config(tiny_data, tmp_path), seed=3)
    assert not any(isinstance(step, (RandAugment, RandomErasing)) for step in
                   plain.transform.transforms)  # fmt: skip
    assert not torch.equal(plain[1][0], first)
    assert isinstance(dataset.transform, Compose)


def test_yaml_settings_reach_the_config_as_given(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "data:\n  rand_augment: {n: 2, m: 27, levels: 30, ops: released}\n  random_erasing: 0.25\n"
    )
    data = load_config(path).data
    assert RandAugment(**dict(data.rand_augment)).ops == "released"
    assert data.random_erasing == 0.25
