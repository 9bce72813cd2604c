"""Clip transforms, checked against slicing, explicit loops, ``colorsys`` and ``F.interpolate``."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch
import torch.nn.functional as F

from sifa.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    ErasingParams,
    GaussianBlur,
    JitterParams,
    MultiScaleCrop,
    Normalize,
    RandomErasing,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ResizeShortSide,
    ThreeCrop,
    ToCTHW,
    ToFloatClip,
    hsv_to_rgb,
    rgb_to_hsv,
)

LUMA = (0.299, 0.587, 0.114)


def float_clip(*shape: int, seed: int = 0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=gen)


def uint8_clip(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)


def flipped_views(image: torch.Tensor) -> torch.Tensor:
    """Frames: the image, mirrored left-right, upside down, and both; ``(4, C, H, W)``."""
    return torch.stack([image, image.flip(-1), image.flip(-2), image.flip(-2).flip(-1)])


def assert_flipped_views(out: torch.Tensor) -> None:
    """The frames of ``flipped_views`` still relate the same way after a per-clip transform."""
    torch.testing.assert_close(out[1], out[0].flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[2], out[0].flip(-2), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[3], out[0].flip(-2).flip(-1), atol=1e-6, rtol=0)


# --- layouts ----------------------------------------------------------------------------------


def test_to_float_clip_layout_and_scale():
    clip = uint8_clip(4, 5, 6, 3)
    out = ToFloatClip()(clip)
    assert out.dtype == torch.float32 and out.shape == (4, 3, 5, 6) and out.is_contiguous()
    for t, c, y, x in [(0, 0, 0, 0), (1, 2, 4, 5), (3, 1, 2, 3), (2, 0, 4, 0)]:
        assert out[t, c, y, x].item() == pytest.approx(clip[t, y, x, c].item() / 255)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize(
    ("clip", "error", "match"),
    [
        (torch.zeros(2, 5, 6, 3), TypeError, "uint8"),
        (torch.zeros(2, 3, 5, 6, dtype=torch.uint8), ValueError, r"\(T, H, W, 3\).*\(2, 3, 5, 6\)"),
        (torch.zeros(5, 6, 3, dtype=torch.uint8), ValueError, r"\(5, 6, 3\)"),
    ],
)
def test_to_float_clip_rejects_bad_clips(clip, error, match):
    with pytest.raises(error, match=match):
        ToFloatClip()(clip)


def test_to_cthw_swaps_time_and_channels():
    clip = float_clip(4, 3, 5, 6)
    out = ToCTHW()(clip)
    assert out.shape == (3, 4, 5, 6) and out.is_contiguous()
    for c in range(3):
        for t in range(4):
            assert torch.equal(out[c, t], clip[t, c])
    views = float_clip(3, 4, 3, 5, 6)
    out = ToCTHW()(views)
    assert out.shape == (3, 3, 4, 5, 6)
    assert torch.equal(out[2, 1, 3], views[2, 3, 1])


def test_float_transforms_reject_bad_clips():
    with pytest.raises(ValueError, match=r"\(\.\.\., T, C, H, W\).*\(3, 5, 6\)"):
        ToCTHW()(float_clip(3, 5, 6))
    with pytest.raises(TypeError, match="float"):
        CenterCrop(2)(uint8_clip(2, 3, 5, 6))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\).*\(2, 4, 5, 6\)"):
        ColorJitter(p=1)(float_clip(2, 4, 5, 6))
    with pytest.raises(ValueError, match=r"\(5, 6\)"):
        Resize(3)(float_clip(5, 6))
    with pytest.raises(TypeError, match="Tensor"):
        RandomHorizontalFlip()([[0.0]])


# --- resizing and deterministic crops -----------------------------------------------------------


@pytest.mark.parametrize(
    ("hw", "size", "expected"),
    [
        ((240, 320), 256, (256, 341)),
        ((320, 240), 256, (341, 256)),
        ((30, 30), 16, (16, 16)),
        ((20, 30), 10, (10, 15)),
        ((21, 30), 10, (10, 14)),  # 14.29 rounds down
        ((22, 35), 10, (10, 16)),  # 15.91 rounds up
    ],
)
def test_resize_short_side_sizes(hw, size, expected):
    out = ResizeShortSide(size)(torch.zeros(1, 3, *hw))
    assert tuple(out.shape) == (1, 3, *expected)


def test_resize_short_side_matches_interpolate():
    clip = float_clip(2, 4, 3, 20, 30)  # views, T, C, H, W
    ref = F.interpolate(
        clip.reshape(8, 3, 20, 30), size=(10, 15), mode="bilinear", antialias=True
    ).reshape(2, 4, 3, 10, 15)
    torch.testing.assert_close(ResizeShortSide(10)(clip), ref)
    no_aa = F.interpolate(clip.reshape(8, 3, 20, 30), size=(10, 15), mode="bilinear")
    out = ResizeShortSide(10, antialias=False)(clip).reshape(8, 3, 10, 15)
    torch.testing.assert_close(out, no_aa)


def test_resize_to_exact_size():
    clip = float_clip(4, 3, 20, 24)
    assert Resize(8)(clip).shape == (4, 3, 8, 8)
    assert Resize((6, 10))(clip).shape == (4, 3, 6, 10)
    torch.testing.assert_close(
        Resize((6, 10))(clip), F.interpolate(clip, size=(6, 10), mode="bilinear", antialias=True)
    )


@pytest.mark.parametrize(
    ("hw", "size", "top", "left"),
    [
        ((20, 24), (10, 12), 5, 6),
        ((24, 20), 7, 8, 6),  # portrait, odd free space rounds down
        ((20, 24), (20, 24), 0, 0),
    ],
)
def test_center_crop_offsets(hw, size, top, left):
    clip = float_clip(4, 3, *hw)
    h, w = (size, size) if isinstance(size, int) else size
    out = CenterCrop(size)(clip)
    assert torch.equal(out, clip[:, :, top : top + h, left : left + w])


def test_center_crop_too_large_names_both_sizes():
    with pytest.raises(ValueError, match=r"21x10.*20x24"):
        CenterCrop((21, 10))(float_clip(2, 3, 20, 24))


@pytest.mark.parametrize(
    ("hw", "boxes"),
    [
        ((20, 32), [(0, 0), (0, 6), (0, 12)]),  # landscape: along the width
        ((32, 20), [(0, 0), (6, 0), (12, 0)]),  # portrait: along the height
        ((23, 33), [(1, 0), (1, 6), (1, 13)]),  # short side larger than the crop: centred on it
        ((20, 20), [(0, 0), (0, 0), (0, 0)]),
    ],
)
def test_three_crop_offsets(hw, boxes):
    clip = float_clip(4, 3, *hw)
    out = ThreeCrop(20)(clip)
    assert out.shape == (3, 4, 3, 20, 20)
    for view, (top, left) in enumerate(boxes):
        assert torch.equal(out[view], clip[:, :, top : top + 20, left : left + 20])


def test_three_crop_too_large():
    with pytest.raises(ValueError, match=r"20x20.*19x30"):
        ThreeCrop(20)(float_clip(1, 3, 19, 30))


# --- random crops -------------------------------------------------------------------------------


def test_random_resized_crop_boxes_fit_and_follow_the_ranges():
    height, width = 200, 300
    crop = RandomResizedCrop(16, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    torch.manual_seed(0)
    fractions = []
    for _ in range(500):
        top, left, h, w = crop.get_params(height, width)
        assert top >= 0 and left >= 0 and top + h <= height and left + w <= width
        # h and w are rounded: widen the bounds by half a pixel on each side.
        low_area, high_area = (h - 0.5) * (w - 0.5), (h + 0.5) * (w + 0.5)
        assert low_area <= 1.0 * height * width and high_area >= 0.2 * height * width
        assert (w + 0.5) / (h - 0.5) >= 3 / 4 and (w - 0.5) / (h + 0.5) <= 4 / 3
        fractions.append(h * w / (height * width))
    assert min(fractions) < 0.3 and max(fractions) > 0.85


@pytest.mark.parametrize(
    ("hw", "scale", "ratio", "box"),
    [
        ((30, 30), (1.0, 1.0), (2.0, 3.0), (7, 0, 15, 30)),  # too square: ratio clamped to 2
        ((30, 30), (1.0, 1.0), (0.25, 0.5), (0, 7, 30, 15)),  # too wide: ratio clamped to 0.5
        ((20, 40), (1.0, 1.0), (0.5, 1.5), (0, 5, 20, 30)),  # too wide: ratio clamped to 1.5
    ],
)
def test_random_resized_crop_fallback(hw, scale, ratio, box):
    torch.manual_seed(0)
    assert RandomResizedCrop(8, scale=scale, ratio=ratio).get_params(*hw) == box


def test_random_resized_crop_fallback_whole_frame_when_ratio_in_range():
    # Full area with ratio in [1, 2] never fits a 2:1 frame except at exactly 2: whole frame.
    torch.manual_seed(0)
    crop = RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(1.0, 2.0), attempts=3)
    assert crop.get_params(20, 40) == (0, 0, 20, 40)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_resized_crop_output_is_box_then_interpolate(seed):
    clip = float_clip(4, 3, 20, 24)
    crop = RandomResizedCrop((8, 10))
    torch.manual_seed(seed)
    top, left, h, w = crop.get_params(20, 24)
    torch.manual_seed(seed)
    out = crop(clip)
    ref = F.interpolate(
        clip[:, :, top : top + h, left : left + w], size=(8, 10), mode="bilinear", antialias=True
    )
    torch.testing.assert_close(out, ref)


def multiscale_reference(height, width, scales, max_distort, more):
    """Allowed ``(h, w)`` pairs, and the fixed positions of TSN for one pair."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    pairs = {
        (sizes[i], sizes[j])
        for i in range(len(sizes))
        for j in range(len(sizes))
        if abs(i - j) <= max_distort
    }
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    if more:
        grid += [(0, 2), (2, 0), (2, 4), (4, 2), (1, 1), (1, 3), (3, 1), (3, 3)]

    def positions(h, w):
        return {(r * ((height - h) // 4), c * ((width - w) // 4)) for r, c in grid}

    return pairs, positions


@pytest.mark.parametrize("more", [True, False])
def test_multiscale_crop_boxes_come_from_sizes_and_grid(more):
    height, width = 40, 60
    scales = (1, 0.875, 0.75, 0.66)  # sizes 40, 35, 30, 26
    crop = MultiScaleCrop(16, scales=scales, max_distort=1, more_fix_crop=more)
    pairs, positions = multiscale_reference(height, width, scales, 1, more)
    assert len(pairs) == 10
    torch.manual_seed(0)
    seen_pairs, seen_grid = set(), set()
    for _ in range(400):
        top, left, h, w = crop.get_params(height, width)
        assert (h, w) in pairs and (top, left) in positions(h, w)
        seen_pairs.add((h, w))
        if (h, w) == (26, 26):
            seen_grid.add((top, left))
    assert seen_pairs == pairs
    assert seen_grid == positions(26, 26)  # (40 - 26) // 4 = 3, (60 - 26) // 4 = 8
    assert len(seen_grid) == (13 if more else 5)


def test_multiscale_crop_random_positions_and_max_distort_zero():
    crop = MultiScaleCrop(16, scales=(1, 0.5), max_distort=0, fix_crop=False)
    torch.manual_seed(0)
    tops = set()
    for _ in range(300):
        top, left, h, w = crop.get_params(40, 60)
        assert (h, w) in {(40, 40), (20, 20)}
        assert 0 <= top <= 40 - h and 0 <= left <= 60 - w
        if h == 20:
            tops.add(top)
    assert len(tops) > 5  # not restricted to the 5 or 13 grid rows


def test_multiscale_crop_output_is_box_then_interpolate():
    clip = float_clip(4, 3, 20, 24)
    crop = MultiScaleCrop(8)
    torch.manual_seed(3)
    top, left, h, w = crop.get_params(20, 24)
    torch.manual_seed(3)
    ref = F.interpolate(
        clip[:, :, top : top + h, left : left + w], size=(8, 8), mode="bilinear", antialias=True
    )
    torch.testing.assert_close(crop(clip), ref)


# --- flip and frame alignment ---------------------------------------------------------------


def test_flip_reverses_the_last_dim():
    clip = float_clip(2, 4, 3, 5, 6)
    reversed_cols = clip[..., [5, 4, 3, 2, 1, 0]]
    assert torch.equal(RandomHorizontalFlip(1.0)(clip), reversed_cols)
    assert torch.equal(RandomHorizontalFlip(0.0)(clip), clip)
    outcomes = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = RandomHorizontalFlip(0.5)(clip)
        assert torch.equal(out, clip) or torch.equal(out, reversed_cols)
        outcomes.add(torch.equal(out, clip))
    assert outcomes == {True, False}


@pytest.mark.parametrize(
    "crop", [RandomResizedCrop((10, 12)), MultiScaleCrop(10, fix_crop=False)], ids=repr
)
def test_frames_share_one_box_and_flip(crop):
    # Frame t is the base image shifted by 0.05 t; bilinear weights sum to 1, so the shift
    # survives one crop box and one flip for all frames, and nothing else.
    base = float_clip(1, 3, 20, 24, low=0.2, high=0.6)
    clip = base + 0.05 * torch.arange(6).view(6, 1, 1, 1)
    pipeline = Compose([crop, RandomHorizontalFlip()])
    for seed in range(6):
        torch.manual_seed(seed)
        out = pipeline(clip)
        shift = out - out[:1]
        torch.testing.assert_close(
            shift, torch.full_like(shift, 0.05) * torch.arange(6).view(6, 1, 1, 1)
        )
        assert not torch.allclose(out[0], out[0].flip(-1))  # the content itself is not trivial


def test_frames_share_one_colour_change_and_blur():
    # Per-clip colour changes and blur commute with mirroring a frame; frames that got their
    # own factors would break the relation between the mirrored frames.
    clip = flipped_views(float_clip(3, 8, 10, seed=4))
    pipeline = Compose([ColorJitter(p=1.0), RandomGrayscale(0.5), GaussianBlur(p=1.0)])
    for seed in range(6):
        torch.manual_seed(seed)
        out = pipeline(clip)
        assert not torch.allclose(out, clip, atol=1e-3)
        assert_flipped_views(out)


# --- colour -------------------------------------------------------------------------------------


def pixels(clip: torch.Tensor):
    """Every pixel of ``(..., 3, H, W)`` as ``(index, (r, g, b))`` with Python floats."""
    flat = clip.movedim(-3, -1).reshape(-1, 3).tolist()
    return list(enumerate(flat))


def from_pixels(values, like: torch.Tensor) -> torch.Tensor:
    shape = (*like.shape[:-3], *like.shape[-2:], 3)
    return torch.tensor(values, dtype=like.dtype).reshape(shape).movedim(-1, -3)


def clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def ref_brightness(clip, factor):
    return from_pixels([[clamp01(factor * v) for v in p] for _, p in pixels(clip)], clip)


def ref_contrast(clip, factor):
    lumas = [sum(w * v for w, v in zip(LUMA, p, strict=True)) for _, p in pixels(clip)]
    mean = sum(lumas) / len(lumas)  # over every pixel of every frame
    return from_pixels(
        [[clamp01(factor * v + (1 - factor) * mean) for v in p] for _, p in pixels(clip)], clip
    )


def ref_saturation(clip, factor):
    out = []
    for _, p in pixels(clip):
        gray = sum(w * v for w, v in zip(LUMA, p, strict=True))
        out.append([clamp01(factor * v + (1 - factor) * gray) for v in p])
    return from_pixels(out, clip)


def ref_hue(clip, shift):
    out = []
    for _, (r, g, b) in pixels(clip):
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        out.append(list(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)))
    return from_pixels(out, clip)


REFERENCES = {
    "brightness": ref_brightness,
    "contrast": ref_contrast,
    "saturation": ref_saturation,
    "hue": ref_hue,
}

SPECIAL_PIXELS = [
    (0.0, 0.0, 0.0),
    (1.0, 1.0, 1.0),
    (0.5, 0.5, 0.5),
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
    (0.2, 0.9, 0.9),
    (0.9, 0.1, 0.5),
    (0.3, 0.6, 0.1),
    (0.7, 0.7, 0.2),
    (0.1, 0.2, 0.8),
]


def test_rgb_hsv_conversions_match_colorsys():
    rgb = torch.tensor(SPECIAL_PIXELS).T.reshape(1, 3, 3, 4)  # (T, C, H, W)
    rgb = torch.cat([rgb, float_clip(1, 3, 3, 4, seed=7)])
    hsv = rgb_to_hsv(rgb)
    for index, (r, g, b) in pixels(rgb):
        t, rest = divmod(index, 12)
        y, x = divmod(rest, 4)
        expected = colorsys.rgb_to_hsv(r, g, b)
        assert hsv[t, :, y, x].tolist() == pytest.approx(expected, abs=1e-6)
        back = colorsys.hsv_to_rgb(*hsv[t, :, y, x].tolist())
        assert hsv_to_rgb(hsv)[t, :, y, x].tolist() == pytest.approx(back, abs=1e-6)
    torch.testing.assert_close(hsv_to_rgb(hsv), rgb, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("name", "factor"),
    [
        ("brightness", 1.6),
        ("brightness", 0.5),
        ("contrast", 0.4),
        ("contrast", 1.7),
        ("saturation", 0.3),
        ("saturation", 1.8),
        ("hue", 0.1),
        ("hue", -0.35),
    ],
)
def test_color_jitter_adjustments_match_per_pixel_references(name, factor):
    clip = float_clip(2, 3, 3, 4, seed=1)
    out = ColorJitter().apply(clip, JitterParams(order=(name,), **{name: factor}))
    torch.testing.assert_close(out, REFERENCES[name](clip, factor), atol=1e-5, rtol=0)
    assert not torch.allclose(out, clip, atol=1e-3)


def test_color_jitter_contrast_uses_one_mean_for_the_whole_clip():
    dark, bright = torch.full((1, 3, 2, 2), 0.2), torch.full((1, 3, 2, 2), 0.6)
    out = ColorJitter().apply(torch.cat([dark, bright]), JitterParams(("contrast",), contrast=0.5))
    # Mean luma of the clip is 0.4: 0.5 * 0.2 + 0.5 * 0.4 and 0.5 * 0.6 + 0.5 * 0.4.
    torch.testing.assert_close(out[0], torch.full((3, 2, 2), 0.3))
    torch.testing.assert_close(out[1], torch.full((3, 2, 2), 0.5))


def test_color_jitter_respects_the_order():
    clip = float_clip(2, 3, 3, 4, seed=2)
    jitter = ColorJitter()
    first = JitterParams(("contrast", "brightness", "hue"), brightness=1.9, contrast=0.3, hue=0.2)
    second = first._replace(order=("hue", "brightness", "contrast"))
    ref_first = ref_hue(ref_brightness(ref_contrast(clip, 0.3), 1.9), 0.2)
    ref_second = ref_contrast(ref_brightness(ref_hue(clip, 0.2), 1.9), 0.3)
    torch.testing.assert_close(jitter.apply(clip, first), ref_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(jitter.apply(clip, second), ref_second, atol=1e-5, rtol=0)
    assert not torch.allclose(ref_first, ref_second, atol=1e-3)


def test_color_jitter_identity_parameters():
    clip = float_clip(2, 3, 5, 6, seed=3)
    identity = JitterParams(("hue", "saturation", "contrast", "brightness"), 1.0, 1.0, 1.0, 0.0)
    torch.testing.assert_close(ColorJitter().apply(clip, identity), clip, atol=1e-6, rtol=0)
    assert torch.equal(ColorJitter(p=0.0)(clip), clip)
    assert torch.equal(ColorJitter(0, 0, 0, 0, p=1.0)(clip), clip)


def test_color_jitter_params_follow_the_ranges():
    jitter = ColorJitter(brightness=0.5, contrast=1.5, saturation=0.0, hue=0.2)
    torch.manual_seed(0)
    orders = set()
    for _ in range(200):
        params = jitter.get_params()
        assert sorted(params.order) == sorted(REFERENCES)
        orders.add(params.order)
        assert 0.5 <= params.brightness <= 1.5
        assert 0.0 <= params.contrast <= 2.5
        assert params.saturation is None
        assert -0.2 <= params.hue <= 0.2
    assert len(orders) == 24


def test_random_grayscale_uses_601_luma():
    clip = float_clip(2, 3, 3, 4, seed=5)
    out = RandomGrayscale(p=1.0)(clip)
    for t in range(2):
        for y in range(3):
            for x in range(4):
                r, g, b = clip[t, :, y, x].tolist()
                expected = 0.299 * r + 0.587 * g + 0.114 * b
                assert out[t, :, y, x].tolist() == pytest.approx([expected] * 3, abs=1e-6)
    assert torch.equal(RandomGrayscale(p=0.0)(clip), clip)


# --- blur ---------------------------------------------------------------------------------------


def reference_blur(image: torch.Tensor, sigma: float, mode: str) -> torch.Tensor:
    """Gaussian blur of ``(C, H, W)`` with explicit loops."""
    radius = math.ceil(3 * sigma)
    weights = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-radius, radius + 1)]
    weights = [w / sum(weights) for w in weights]
    channels, height, width = image.shape

    def index(i, n):
        if mode == "replicate":
            return min(max(i, 0), n - 1)
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    out = torch.zeros_like(image)
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                total = 0.0
                for a, wy in enumerate(weights):
                    for b, wx in enumerate(weights):
                        iy, ix = index(y + a - radius, height), index(x + b - radius, width)
                        total += wy * wx * float(image[c, iy, ix])
                out[c, y, x] = total
    return out


@pytest.mark.parametrize(
    ("hw", "sigma", "mode"),
    [((5, 6), 0.7, "reflect"), ((5, 6), 1.5, "replicate"), ((7, 6), 0.3, "reflect")],
)
def test_gaussian_blur_matches_explicit_loops(hw, sigma, mode):
    clip = float_clip(2, 3, *hw, seed=6)
    out = GaussianBlur().apply(clip, sigma)
    for t in range(2):
        torch.testing.assert_close(out[t], reference_blur(clip[t], sigma, mode), atol=1e-5, rtol=0)


def test_gaussian_blur_keeps_constant_images_constant():
    clip = torch.full((3, 3, 9, 11), 0.37)
    for seed in range(4):
        torch.manual_seed(seed)
        torch.testing.assert_close(GaussianBlur(p=1.0)(clip), clip, atol=1e-6, rtol=0)
    textured = float_clip(2, 3, 9, 11)
    assert torch.equal(GaussianBlur(p=0.0)(textured), textured)
    torch.manual_seed(0)
    assert not torch.allclose(GaussianBlur(sigma=1.0, p=1.0)(textured), textured, atol=1e-3)


# --- normalisation, presets -------------------------------------------------------------------


def test_normalize_per_channel():
    clip = float_clip(2, 4, 3, 5, 6)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 4.0)
    out = Normalize(mean, std)(clip)
    for c in range(3):
        expected = (clip[..., c, :, :] - mean[c]) / std[c]
        torch.testing.assert_close(out[..., c, :, :], expected)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\).*\(4, 2, 5, 6\)"):
        Normalize(mean, std)(float_clip(4, 2, 5, 6))
    with pytest.raises(TypeError, match="float"):
        Normalize(mean, std)(uint8_clip(4, 3, 5, 6))


def test_reprs_name_the_settings():
    assert repr(RandomResizedCrop(8, attempts=3)) == (
        "RandomResizedCrop(size=(8, 8), scale=(0.2, 1.0), ratio=(0.75, 1.3333333333333333), "
        "attempts=3)"
    )
    assert repr(GaussianBlur(1.5, p=0.25)) == "GaussianBlur(sigma=(1.5, 1.5), p=0.25)"


# --- random erasing ------------------------------------------------------------------------------


def test_random_erasing_erases_one_box_in_every_frame():
    clip = float_clip(5, 3, 20, 30, low=0.5)  # no zeros before erasing
    erasing = RandomErasing(p=1.0)
    for seed in range(20):
        torch.manual_seed(seed)
        out = erasing(clip)
        erased = out == 0
        assert torch.equal(erased, erased[:1, :1].expand_as(erased))  # same box, all channels
        rows, cols = erased[0, 0].nonzero().unbind(1)
        if len(rows):
            top, left = int(rows.min()), int(cols.min())
            h, w = int(rows.max()) - top + 1, int(cols.max()) - left + 1
            assert erased[0, 0].sum() == h * w  # a full rectangle
        torch.testing.assert_close(out[~erased], clip[~erased], atol=0, rtol=0)
    assert float(clip.min()) > 0  # the input is kept


def test_random_erasing_boxes_follow_the_ranges():
    erasing = RandomErasing(p=1.0, scale=(0.05, 0.3), ratio=(0.5, 2.0))
    height, width = 40, 50
    torch.manual_seed(0)
    boxes = [erasing.get_params(3, height, width) for _ in range(2000)]
    assert all(box is not None for box in boxes)
    for top, left, h, w, fill in boxes:
        assert 0 <= top <= height - h and 0 <= left <= width - w
        assert 0 < h < height and 0 < w < width and torch.equal(fill, torch.zeros(3, 1, 1))
        # h and w are the rounded sqrt(area * ratio) and sqrt(area / ratio): some area and
        # ratio in range round to them.
        areas = ((h - 0.5) * (w - 0.5), (h + 0.5) * (w + 0.5))
        ratios = ((h - 0.5) / (w + 0.5), (h + 0.5) / (w - 0.5))
        assert areas[1] >= 0.05 * height * width and areas[0] <= 0.3 * height * width
        assert ratios[1] >= 0.5 and ratios[0] <= 2.0
    fractions = torch.tensor([h * w / (height * width) for _, _, h, w, _ in boxes])
    assert 0.04 < float(fractions.min()) < 0.07 and 0.25 < float(fractions.max()) < 0.33
    tops = torch.tensor([top for top, *_ in boxes], dtype=torch.float32)
    assert float(tops.min()) == 0  # placed anywhere


def test_random_erasing_probability_and_no_fit():
    clip = float_clip(2, 3, 10, 10, low=0.5)
    assert RandomErasing(p=0.0)(clip) is clip
    torch.manual_seed(0)
    hits = sum(bool((RandomErasing(p=0.25)(clip) == 0).any()) for _ in range(400))
    assert 70 < hits < 130
    # Boxes of 99 % of the area never fit strictly inside the frame: nothing is erased.
    never = RandomErasing(p=1.0, scale=(0.99, 1.0))
    assert never.get_params(3, 10, 10) is None and never(clip) is clip


def test_random_erasing_fill_values():
    clip = float_clip(3, 3, 16, 16, low=0.5)
    for value, check in [
        (-1.5, lambda fill: torch.equal(fill, torch.full((3, 1, 1), -1.5))),
        ((1.0, 2.0, 3.0), lambda fill: fill.flatten().tolist() == [1.0, 2.0, 3.0]),
        ("random", lambda fill: fill.shape == (3, 1, 1)),
        ("pixel", lambda fill: fill.dim() == 3 and fill.shape[0] == 3),
    ]:
        erasing = RandomErasing(p=1.0, value=value)
        torch.manual_seed(1)
        params = erasing.get_params(3, 16, 16)
        assert isinstance(params, ErasingParams) and check(params.fill)
        torch.manual_seed(1)
        assert torch.equal(erasing.get_params(3, 16, 16).fill, params.fill)  # seeded
        out = erasing.apply(clip, params)
        top, left, h, w, fill = params
        box = out[..., top : top + h, left : left + w]
        assert torch.equal(box, fill.expand(3, 3, h, w))  # the same fill in every frame
    with pytest.raises(ValueError, match="value has 3 channels, the clip 2"):
        RandomErasing(p=1.0, value=(1, 2, 3))(float_clip(2, 2, 16, 16))


def test_random_erasing_repr_and_defaults():
    assert repr(RandomErasing()) == (
        "RandomErasing(p=0.25, scale=(0.02, 0.3333333333333333), "
        "ratio=(0.3, 3.3333333333333335), value=0.0, attempts=10)"
    )


# --- argument validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: ResizeShortSide(0), ValueError, r"size.*0"),
        (lambda: ResizeShortSide(2.5), TypeError, r"size.*2\.5"),
        (lambda: Resize((4, 0)), ValueError, r"size\[1\].*0"),
        (lambda: CenterCrop((3,)), ValueError, r"size.*\(3,\)"),
        (lambda: ThreeCrop("8"), TypeError, r"size.*'8'"),
        (lambda: RandomResizedCrop(8, scale=(0.5, 0.2)), ValueError, r"scale.*0\.5, 0\.2"),
        (lambda: RandomResizedCrop(8, scale=(0.1, 1.5)), ValueError, r"scale\[1\].*1\.5"),
        (lambda: RandomResizedCrop(8, ratio=(0, 1)), ValueError, r"ratio\[0\].*0"),
        (lambda: RandomResizedCrop(8, attempts=0), ValueError, r"attempts.*0"),
        (lambda: MultiScaleCrop(8, scales=()), ValueError, r"scales"),
        (lambda: MultiScaleCrop(8, scales=(1, 1.2)), ValueError, r"scales\[1\].*1\.2"),
        (lambda: MultiScaleCrop(8, max_distort=-1), ValueError, r"max_distort.*-1"),
        (lambda: RandomHorizontalFlip(1.5), ValueError, r"p .*1\.5"),
        (lambda: RandomGrayscale(True), TypeError, r"p .*True"),
        (lambda: ColorJitter(brightness=-0.1), ValueError, r"brightness.*-0\.1"),
        (lambda: ColorJitter(hue=0.6), ValueError, r"hue.*0\.6"),
        (lambda: ColorJitter(contrast=None), TypeError, r"contrast.*None"),
        (lambda: GaussianBlur(sigma=(2, 1)), ValueError, r"sigma.*\(2, 1\)"),
        (lambda: GaussianBlur(sigma=0), ValueError, r"sigma\[0\].*0"),
        (lambda: GaussianBlur().apply(torch.zeros(1, 3, 4, 4), -1.0), ValueError, r"sigma.*-1"),
        (lambda: Normalize((0.5,), (0.5, 0.5)), ValueError, r"std.*\(0\.5, 0\.5\)"),
        (lambda: Normalize((0.5,), (0.0,)), ValueError, r"std\[0\].*0"),
        (lambda: Normalize("abc", (1, 1, 1)), TypeError, r"mean.*'abc'"),
        (lambda: Compose([ToCTHW(), 1]), TypeError, r"transforms\[1\].*1"),
        (lambda: RandomErasing(p=2), ValueError, r"p .*2"),
        (lambda: RandomErasing(scale=(0.5, 0.1)), ValueError, r"scale.*0\.5, 0\.1"),
        (lambda: RandomErasing(ratio=(0, 1)), ValueError, r"ratio\[0\].*0"),
        (lambda: RandomErasing(value="noise"), ValueError, r"value must be.*'noise'"),
        (lambda: RandomErasing(value=(1, "a")), TypeError, r"value\[1\].*'a'"),
        (lambda: RandomErasing(attempts=0), ValueError, r"attempts.*0"),
        (lambda: RandomErasing()(torch.zeros(3, 4, 4, dtype=torch.uint8)), TypeError, "float"),
    ],
)
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()
