"""Presets of whole training and test pipelines: the Kinetics-400 recipe of SIFA-Net, built from
the clip transforms of :mod:`sifa.data.transforms` and :mod:`sifa.data.rand_augment`.

- :func:`train_transform`: for training on any video data set. Random resized crop (area 20-100 %,
  aspect 3/4-4/3) to 224 x 224, colour jitter (p 0.8), grayscale (p 0.2), Gaussian blur (p 0.5),
  horizontal flip, ImageNet normalisation -> float ``(C, T, H, W)``. For data where left and right
  matter (Something-Something: "pushing something from left to right") pass ``flip=False``.
  Optionally RandAugment after the crop (:mod:`sifa.data.rand_augment`) and random erasing
  after the normalisation, each with one draw for the whole clip.
- :func:`eval_transform`: for validation and testing. Short side resized to 256, then three
  256 x 256 crops along the long side (``crops=3``, Kinetics' 3-crop protocol, output
  ``(3, C, T, H, W)``) or one centre crop (``crops=1``, output ``(C, T, H, W)``), ImageNet
  normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sifa.data.rand_augment import RandAugment
from sifa.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
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
    _int,
    _probability,
    _sequence,
)

__all__ = ["eval_transform", "train_transform"]


def train_transform(
    size: int = 224,
    crop: str = "random_resized",
    scale: Sequence[float] = (0.2, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    flip: bool = True,
    color_jitter: Sequence[float] | None = (0.4, 0.4, 0.4, 0.1),
    color_jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    rand_augment: Mapping | Callable | None = None,
    random_erasing: float = 0.0,
) -> Compose:
    """Training clips: uint8 ``(T, H, W, 3)`` -> float32 ``(3, T, size, size)`` (module docstring).

    ``crop="center"`` replaces the random resized crop by a short-side resize and a centre crop
    (for data whose geometry carries the label, like the synthetic motion task).
    ``color_jitter`` is ``(brightness, contrast, saturation, hue)``; ``None`` or a probability of
    0 leaves a step out, and ``flip=False`` the flip (for direction-sensitive data).
    ``rand_augment``: ``None`` (off), the keyword arguments of
    :class:`sifa.data.rand_augment.RandAugment` (``{"n": 2, "m": 9}``) or a ready one.
    ``random_erasing``: the probability of :class:`RandomErasing` (0: off).

    Order: crop, RandAugment, colour jitter, grayscale, blur, flip, normalisation, random
    erasing, ``(C, T, H, W)``.
    """
    if crop == "random_resized":
        steps: list[Callable] = [ToFloatClip(), RandomResizedCrop(size, scale, ratio)]
    elif crop == "center":
        steps = [ToFloatClip(), ResizeShortSide(size), CenterCrop(size)]
    else:
        raise ValueError(f"crop must be 'random_resized' or 'center', got {crop!r}")
    if isinstance(rand_augment, Mapping):
        steps.append(RandAugment(**rand_augment))
    elif callable(rand_augment):
        steps.append(rand_augment)
    elif rand_augment is not None:
        raise TypeError(
            "rand_augment must be None, RandAugment's keyword arguments or a transform, "
            f"got {rand_augment!r}"
        )
    if color_jitter is not None and _probability("color_jitter_p", color_jitter_p) > 0:
        steps.append(ColorJitter(*_sequence("color_jitter", color_jitter, 4), p=color_jitter_p))
    if _probability("grayscale_p", grayscale_p) > 0:
        steps.append(RandomGrayscale(grayscale_p))
    if _probability("blur_p", blur_p) > 0:
        steps.append(GaussianBlur(p=blur_p))
    if flip:
        steps.append(RandomHorizontalFlip())
    steps.append(Normalize(mean, std))
    if _probability("random_erasing", random_erasing) > 0:
        steps.append(RandomErasing(random_erasing))
    return Compose([*steps, ToCTHW()])


def eval_transform(
    short_side: int = 256,
    crop_size: int = 256,
    crops: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Test clips: uint8 ``(T, H, W, 3)`` -> float32 ``(3, 3, T, crop_size, crop_size)`` (three
    crops, ``crops=3``) or ``(3, T, crop_size, crop_size)`` (centre crop, ``crops=1``)."""
    short_side, crop_size = _int("short_side", short_side), _int("crop_size", crop_size)
    if crop_size > short_side:
        raise ValueError(f"crop_size must be <= short_side ({short_side}), got {crop_size}")
    if crops == 3:
        crop: Callable = ThreeCrop(crop_size)
    elif crops == 1:
        crop = CenterCrop(crop_size)
    else:
        raise ValueError(f"crops must be 1 or 3, got {crops!r}")
    return Compose(
        [ToFloatClip(), ResizeShortSide(short_side), crop, Normalize(mean, std), ToCTHW()]
    )
