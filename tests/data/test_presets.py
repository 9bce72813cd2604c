"""The training and test presets: their steps, output shapes, seeding and argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sifa.data.presets import eval_transform, train_transform
from sifa.data.rand_augment import RandAugment
from sifa.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    GaussianBlur,
    Normalize,
    RandomErasing,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    ResizeShortSide,
    ThreeCrop,
    ToCTHW,
    ToFloatClip,
)


def uint8_clip(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)


def step_types(pipeline: Compose) -> list[type]:
    return [type(step) for step in pipeline.transforms]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_identical_frames_stay_identical_through_the_presets(seed):
    frame = uint8_clip(1, 30, 40, 3, seed=seed)
    clip = frame.expand(4, 30, 40, 3).contiguous()
    torch.manual_seed(seed)
    out = train_transform(size=16, color_jitter_p=1.0, grayscale_p=0.5, blur_p=1.0)(clip)
    assert out.shape == (3, 4, 16, 16)
    for t in range(1, 4):
        torch.testing.assert_close(out[:, t], out[:, 0], atol=1e-6, rtol=0)
    augment = {"n": 3, "m": 27, "levels": 30, "ops": "released" if seed % 2 else "standard"}
    out = train_transform(size=16, rand_augment=augment, random_erasing=1.0)(clip)
    for t in range(1, 4):
        torch.testing.assert_close(out[:, t], out[:, 0], atol=1e-6, rtol=0)
    out = eval_transform(short_side=20, crop_size=20)(clip)
    assert out.shape == (3, 3, 4, 20, 20)
    for t in range(1, 4):
        torch.testing.assert_close(out[:, :, t], out[:, :, 0], atol=1e-6, rtol=0)


def test_train_preset_steps_and_output():
    full = [
        ToFloatClip,
        RandomResizedCrop,
        ColorJitter,
        RandomGrayscale,
        GaussianBlur,
        RandomHorizontalFlip,
        Normalize,
        ToCTHW,
    ]
    assert step_types(train_transform()) == full
    assert RandomHorizontalFlip not in step_types(train_transform(flip=False))
    bare = train_transform(color_jitter=None, grayscale_p=0, blur_p=0.0, flip=False)
    assert step_types(bare) == [ToFloatClip, RandomResizedCrop, Normalize, ToCTHW]
    assert ColorJitter not in step_types(train_transform(color_jitter_p=0))
    torch.manual_seed(0)
    out = train_transform(size=12)(uint8_clip(4, 20, 24, 3))
    assert out.dtype == torch.float32 and out.shape == (3, 4, 12, 12) and out.is_contiguous()


def test_test_preset_crops_and_output():
    clip = uint8_clip(4, 20, 30, 3)
    three = eval_transform(short_side=16, crop_size=14, crops=3)
    assert step_types(three) == [ToFloatClip, ResizeShortSide, ThreeCrop, Normalize, ToCTHW]
    out = three(clip)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 4, 14, 14) and out.is_contiguous()
    one = eval_transform(short_side=16, crop_size=14, crops=1)
    assert CenterCrop in step_types(one)
    assert one(clip).shape == (3, 4, 14, 14)
    # The centre crop is the middle one of the three crops.
    torch.testing.assert_close(one(clip), out[1])


def test_presets_are_reproducible_with_the_seed():
    clip = uint8_clip(4, 20, 24, 3)
    pipeline = train_transform(size=12)
    torch.manual_seed(11)
    first = pipeline(clip)
    torch.manual_seed(11)
    again = pipeline(clip)
    torch.manual_seed(12)
    other = pipeline(clip)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_train_preset_order_with_rand_augment_and_random_erasing():
    preset = train_transform(rand_augment={"n": 2, "m": 9}, random_erasing=0.25)
    assert step_types(preset) == [
        ToFloatClip,
        RandomResizedCrop,
        RandAugment,
        ColorJitter,
        RandomGrayscale,
        GaussianBlur,
        RandomHorizontalFlip,
        Normalize,
        RandomErasing,
        ToCTHW,
    ]
    assert preset.transforms[2].n == 2 and preset.transforms[8].p == 0.25
    ready = RandAugment(1, 27, 30, "released")
    bare = train_transform(color_jitter=None, grayscale_p=0, blur_p=0, rand_augment=ready)
    assert bare.transforms[2] is ready
    with pytest.raises(TypeError, match="rand_augment must be"):
        train_transform(rand_augment=3)


def test_train_preset_output_changes_with_rand_augment_on():
    clip = uint8_clip(4, 20, 24, 3)
    settings = {"size": 12, "color_jitter": None, "grayscale_p": 0, "blur_p": 0}
    outputs = []
    for extra in ({}, {"rand_augment": {"n": 2, "m": 9}}, {"random_erasing": 1.0}):
        torch.manual_seed(5)
        outputs.append(train_transform(**settings, **extra)(clip))
    plain, augmented, erased = outputs
    assert augmented.shape == erased.shape == plain.shape == (3, 4, 12, 12)
    assert not torch.equal(augmented, plain)
    assert augmented.is_contiguous() and erased.is_contiguous()
    # Erasing comes after everything else and draws last: the rest of the clip is the same.
    changed = erased != plain
    assert changed.any() and (erased[changed] == 0).all()


def test_train_preset_with_centre_crop_is_deterministic_geometry():
    clip = (torch.arange(4 * 30 * 40 * 3) % 251).to(torch.uint8).reshape(4, 30, 40, 3)
    preset = train_transform(
        size=16, crop="center", flip=False, color_jitter=None, grayscale_p=0, blur_p=0,
        mean=(0, 0, 0), std=(1, 1, 1),
    )  # fmt: skip
    expected = F.interpolate(
        clip.permute(0, 3, 1, 2).float() / 255, size=(16, 21), mode="bilinear",
        align_corners=False, antialias=True,
    )[..., 2:18].transpose(0, 1)  # fmt: skip
    torch.testing.assert_close(preset(clip), expected)
    with pytest.raises(ValueError, match=r"crop must be 'random_resized' or 'center', got 'x'"):
        train_transform(crop="x")


def test_the_preset_repr_lists_its_steps():
    text = repr(eval_transform(crops=1))
    assert text.startswith("Compose([") and "CenterCrop(size=(256, 256))" in text


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: train_transform(color_jitter=(0.4,)), ValueError, r"color_jitter.*\(0\.4,\)"),
        (lambda: train_transform(blur_p=2), ValueError, r"blur_p.*2"),
        (lambda: train_transform(random_erasing=-0.1), ValueError, r"random_erasing.*-0\.1"),
        (lambda: eval_transform(crops=2), ValueError, r"crops.*2"),
        (lambda: eval_transform(crop_size=300), ValueError, r"crop_size.*300"),
    ],
)
def test_bad_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()
