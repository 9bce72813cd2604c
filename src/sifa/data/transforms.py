"""Tensor transforms of whole video clips: one crop, flip, colour change and blur for all frames.

No torchvision. Randomness comes only from torch's global RNG (``torch.rand``, ``torch.randint``,
...), so the dataset's per-item ``torch.manual_seed`` and the DataLoader's worker seeding make
every epoch reproducible.

Layout: decoders give uint8 ``(T, H, W, 3)`` RGB; :class:`ToFloatClip` makes it float32
``(T, 3, H, W)`` in [0, 1]. Every later transform takes and returns a float tensor whose last three
dims are ``(C, H, W)``, after any number of leading dims (``(T, C, H, W)``, or ``(3, T, C, H, W)``
after :class:`ThreeCrop`: views first). :class:`ToCTHW` comes last and gives ``(..., C, T, H, W)``.
Sizes are in pixels, ``(height, width)`` where a pair; colour values in [0, 1] until
:class:`Normalize`.

The presets of the SIFA-Net recipe, :func:`~sifa.data.presets.train_transform` and
:func:`~sifa.data.presets.eval_transform`, are built from these in :mod:`sifa.data.presets`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "ErasingParams",
    "GaussianBlur",
    "JitterParams",
    "MultiScaleCrop",
    "Normalize",
    "RandomErasing",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ResizeShortSide",
    "ThreeCrop",
    "ToCTHW",
    "ToFloatClip",
    "hsv_to_rgb",
    "rgb_to_hsv",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# Argument and clip checks, random draws


def _int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _number(
    name: str, value, low: float = -math.inf, high: float = math.inf, *, open_low: bool = False
) -> float:
    """``value`` as a float, checked to lie in ``[low, high]`` (``(low, high]`` if open_low)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or value > high or (value <= low if open_low else value < low):
        raise ValueError(
            f"{name} must be in {'(' if open_low else '['}{low}, {high}], got {value!r}"
        )
    return value


def _sequence(name: str, value, length: int | None = None) -> tuple:
    if isinstance(value, str) or not isinstance(value, Sequence | torch.Tensor):
        raise TypeError(f"{name} must be a sequence, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} elements, got {value!r}")
    return tuple(value)


def _range(name: str, value, low: float, high: float = math.inf) -> tuple[float, float]:
    """A pair ``(a, b)`` with ``low < a <= b <= high``."""
    a, b = (
        _number(f"{name}[{i}]", v, low, high, open_low=True)
        for i, v in enumerate(_sequence(name, value, 2))
    )
    if a > b:
        raise ValueError(f"{name} must be (min, max) with min <= max, got {value!r}")
    return a, b


def _size(name: str, value) -> tuple[int, int]:
    """An int (square) or a pair as ``(height, width)``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (_int(name, value),) * 2
    height, width = (_int(f"{name}[{i}]", v) for i, v in enumerate(_sequence(name, value, 2)))
    return height, width


def _probability(name: str, p) -> float:
    return _number(name, p, 0.0, 1.0)


def _check_clip(clip, who: str, channels: int | None = None, min_dims: int = 3) -> None:
    """Raise unless ``clip`` is a float tensor ``(..., C, H, W)`` (``(..., T, C, H, W)``)."""
    if not isinstance(clip, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(clip).__name__}")
    if not clip.is_floating_point():
        raise TypeError(f"{who} expects a float clip (see ToFloatClip), got dtype {clip.dtype}")
    if clip.ndim < min_dims or (channels is not None and clip.shape[-3] != channels):
        layout = ("..., T, " if min_dims > 3 else "..., ") + f"{channels or 'C'}, H, W"
        raise ValueError(f"{who} expects a clip of shape ({layout}), got {tuple(clip.shape)}")


def _check_fits(who: str, clip: torch.Tensor, height: int, width: int) -> None:
    if height > clip.shape[-2] or width > clip.shape[-1]:
        raise ValueError(
            f"{who}: crop size {height}x{width} is larger than the frames, "
            f"{clip.shape[-2]}x{clip.shape[-1]}"
        )


def _coin(p: float) -> bool:
    """True with probability ``p``."""
    return bool(torch.rand(()) < p)


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _randint(low: int, high: int) -> int:
    """An integer uniform in ``[low, high]``."""
    return int(torch.randint(low, high + 1, ()))


# ---------------------------------------------------------------------------------------------
# Tensor helpers


def _crop(clip: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return clip[..., top : top + height, left : left + width]


def _resize(clip: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of ``(..., C, H, W)`` to ``(..., C, *size)``, all frames as one batch."""
    if tuple(clip.shape[-2:]) == size:
        return clip
    frames = clip.reshape(-1, *clip.shape[-3:])
    frames = F.interpolate(
        frames, size=size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return frames.reshape(*clip.shape[:-2], *size)


def _luma(clip: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of RGB ``(..., 3, H, W)`` -> ``(..., H, W)``."""
    r, g, b = clip.unbind(-3)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _blend(clip: torch.Tensor, other: torch.Tensor | float, factor: float) -> torch.Tensor:
    return (factor * clip + (1.0 - factor) * other).clamp(0.0, 1.0)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB ``(..., 3, H, W)`` in [0, 1] -> HSV, each in [0, 1] (hue in turns), as ``colorsys``."""
    r, g, b = rgb.unbind(-3)
    maxc, minc = rgb.amax(-3), rgb.amin(-3)
    delta = maxc - minc
    saturation = delta / torch.where(maxc == 0, 1.0, maxc)
    # Gray pixels (delta 0) get rc = gc = bc = 0, hence hue 0 as in colorsys.
    safe = torch.where(delta == 0, 1.0, delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = (hue / 6.0) % 1.0
    return torch.stack((hue, saturation, maxc), dim=-3)


# For each sixth of the hue circle, which of (v, q, p, t) make R, G and B (as colorsys).
_HSV_SECTORS = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV ``(..., 3, H, W)``, each in [0, 1] (hue in turns, taken modulo 1) -> RGB in [0, 1]."""
    hue, saturation, value = hsv.unbind(-3)
    sector = (hue * 6.0).floor()
    f = hue * 6.0 - sector
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * f)
    t = value * (1.0 - saturation * (1.0 - f))
    index = _HSV_SECTORS.to(hsv.device)[sector.long() % 6].movedim(-1, -3)
    return torch.stack((value, q, p, t), dim=-3).gather(-3, index)


def _brightness(clip: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(clip, 0.0, factor)


def _contrast(clip: torch.Tensor, factor: float) -> torch.Tensor:
    # One mean over the whole clip, so every frame gets the same mapping.
    return _blend(clip, _luma(clip).mean(), factor)


def _saturation(clip: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(clip, _luma(clip).unsqueeze(-3), factor)


def _hue(clip: torch.Tensor, shift: float) -> torch.Tensor:
    hue, saturation, value = rgb_to_hsv(clip).unbind(-3)
    return hsv_to_rgb(torch.stack(((hue + shift) % 1.0, saturation, value), dim=-3))


# ---------------------------------------------------------------------------------------------
# Transforms


class _Transform:
    """Base class: a ``__repr__`` that lists the attributes named in ``_fields``."""

    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({args})"


class Compose:
    """Apply ``transforms`` one after the other."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = _sequence("transforms", transforms)
        for i, transform in enumerate(self.transforms):
            if not callable(transform):
                raise TypeError(f"transforms[{i}] must be callable, got {transform!r}")

    def __call__(self, clip):
        for transform in self.transforms:
            clip = transform(clip)
        return clip

    def __repr__(self) -> str:
        lines = "".join(f"    {transform!r},\n" for transform in self.transforms)
        return f"Compose([\n{lines}])"


class ToFloatClip(_Transform):
    """uint8 ``(T, H, W, 3)`` RGB -> float32 ``(T, 3, H, W)`` in [0, 1], contiguous."""

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        if not isinstance(clip, torch.Tensor) or clip.dtype != torch.uint8:
            got = clip.dtype if isinstance(clip, torch.Tensor) else type(clip).__name__
            raise TypeError(f"ToFloatClip expects a uint8 tensor, got {got}")
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise ValueError(
                f"ToFloatClip expects a clip of shape (T, H, W, 3), got {tuple(clip.shape)}"
            )
        permuted = clip.permute(0, 3, 1, 2)
        return permuted.to(torch.float32, memory_format=torch.contiguous_format).div_(255)


class ResizeShortSide(_Transform):
    """Bilinear resize so that the shorter side is ``size``, the other rounded to keep the aspect
    ratio: ``(..., C, H, W) -> (..., C, H', W')``."""

    _fields = ("size", "antialias")

    def __init__(self, size: int, antialias: bool = True) -> None:
        self.size = _int("size", size)
        self.antialias = bool(antialias)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "ResizeShortSide")
        height, width = clip.shape[-2:]
        short, long = sorted((height, width))
        other = int(long * self.size / short + 0.5)
        size = (self.size, other) if height <= width else (other, self.size)
        return _resize(clip, size, self.antialias)


class Resize(_Transform):
    """Bilinear resize to exactly ``size`` (int: square; pair: ``(height, width)``)."""

    _fields = ("size", "antialias")

    def __init__(self, size: int | Sequence[int], antialias: bool = True) -> None:
        self.size = _size("size", size)
        self.antialias = bool(antialias)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "Resize")
        return _resize(clip, self.size, self.antialias)


class CenterCrop(_Transform):
    """The central ``size`` crop (int: square), offsets rounded down: ``(..., C, h, w)``."""

    _fields = ("size",)

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size("size", size)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "CenterCrop")
        height, width = self.size
        _check_fits("CenterCrop", clip, height, width)
        top, left = (clip.shape[-2] - height) // 2, (clip.shape[-1] - width) // 2
        return _crop(clip, top, left, height, width)


class ThreeCrop(_Transform):
    """Three ``size x size`` crops along the longer side (start, centre, end; centred on the
    shorter side), stacked first: ``(..., C, H, W) -> (3, ..., C, size, size)``.

    The test protocol resizes the short side to ``size`` first, so the crops cover the frames.
    Square frames count as landscape.
    """

    _fields = ("size",)

    def __init__(self, size: int) -> None:
        self.size = _int("size", size)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "ThreeCrop")
        size = self.size
        _check_fits("ThreeCrop", clip, size, size)
        height, width = clip.shape[-2:]
        along = (0, (max(height, width) - size) // 2, max(height, width) - size)
        across = (min(height, width) - size) // 2
        boxes = [(across, a) if width >= height else (a, across) for a in along]
        return torch.stack([_crop(clip, top, left, size, size) for top, left in boxes])


class RandomResizedCrop(_Transform):
    """A random box (torchvision's algorithm), the same for all frames, resized (bilinear,
    antialiased) to ``size``: ``(..., C, H, W) -> (..., C, *size)``.

    The box covers a fraction of the area uniform in ``scale`` with a width/height ratio whose
    log is uniform in ``log(ratio)``; after ``attempts`` draws that do not fit, the central crop
    of the whole frame with the ratio clamped into ``ratio``.
    """

    _fields = ("size", "scale", "ratio", "attempts")

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        attempts: int = 10,
    ) -> None:
        self.size = _size("size", size)
        self.scale = _range("scale", scale, 0.0, 1.0)
        self.ratio = _range("ratio", ratio, 0.0)
        self.attempts = _int("attempts", attempts)

    def get_params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A box ``(top, left, h, w)`` inside a ``height x width`` frame."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(self.attempts):
            target = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(*log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return _randint(0, height - h), _randint(0, width - w), h, w
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        if aspect < width / height:
            h, w = height, round(height * aspect)
        elif aspect > width / height:
            h, w = round(width / aspect), width
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "RandomResizedCrop")
        box = self.get_params(*clip.shape[-2:])
        return _resize(_crop(clip, *box), self.size)


def _fixed_offsets(height: int, width: int, h: int, w: int, more: bool) -> list[tuple[int, int]]:
    """TSN's crop positions ``(top, left)``: multiples of a quarter of the free space (rounded
    down, so the far edges may stay up to 3 px away) at the corners and centre, and with
    ``more`` also the middles of the edges and the quarter points."""
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    if more:
        grid += [(2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    step_y, step_x = (height - h) // 4, (width - w) // 4
    return [(row * step_y, col * step_x) for row, col in grid]


class MultiScaleCrop(_Transform):
    """TSN's multi-scale crop, the same box for all frames, resized to ``size``:
    ``(..., C, H, W) -> (..., C, *size)``.

    The crop's height and width are each ``int(min(H, W) * s)`` for ``s`` in ``scales``, their
    indices at most ``max_distort`` apart; its position is one of TSN's fixed positions
    (``fix_crop``, see ``more_fix_crop``) or uniformly random.
    """

    _fields = ("size", "scales", "max_distort", "fix_crop", "more_fix_crop")

    def __init__(
        self,
        size: int | Sequence[int],
        scales: Sequence[float] = (1, 0.875, 0.75, 0.66),
        max_distort: int = 1,
        fix_crop: bool = True,
        more_fix_crop: bool = True,
    ) -> None:
        self.size = _size("size", size)
        scales = _sequence("scales", scales)
        if not scales:
            raise ValueError("scales must not be empty, got ()")
        self.scales = tuple(
            _number(f"scales[{i}]", s, 0.0, 1.0, open_low=True) for i, s in enumerate(scales)
        )
        self.max_distort = _int("max_distort", max_distort, 0)
        self.fix_crop = bool(fix_crop)
        self.more_fix_crop = bool(more_fix_crop)

    def get_params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A box ``(top, left, h, w)`` inside a ``height x width`` frame."""
        sizes = [max(1, int(min(height, width) * s)) for s in self.scales]
        pairs = [
            (h, w)
            for i, h in enumerate(sizes)
            for j, w in enumerate(sizes)
            if abs(i - j) <= self.max_distort
        ]
        h, w = pairs[_randint(0, len(pairs) - 1)]
        if self.fix_crop:
            offsets = _fixed_offsets(height, width, h, w, self.more_fix_crop)
            top, left = offsets[_randint(0, len(offsets) - 1)]
        else:
            top, left = _randint(0, height - h), _randint(0, width - w)
        return top, left, h, w

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "MultiScaleCrop")
        box = self.get_params(*clip.shape[-2:])
        return _resize(_crop(clip, *box), self.size)


class RandomHorizontalFlip(_Transform):
    """With probability ``p``, mirror all frames left to right."""

    _fields = ("p",)

    def __init__(self, p: float = 0.5) -> None:
        self.p = _probability("p", p)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "RandomHorizontalFlip")
        return clip.flip(-1) if _coin(self.p) else clip


_JITTER_NAMES = ("brightness", "contrast", "saturation", "hue")
_ADJUST = {
    "brightness": _brightness,
    "contrast": _contrast,
    "saturation": _saturation,
    "hue": _hue,
}


class JitterParams(NamedTuple):
    """One :class:`ColorJitter` draw: the order of the adjustments (names) and their factors
    (hue: a shift in turns); ``None`` skips an adjustment."""

    order: tuple[str, ...] = _JITTER_NAMES
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None


class ColorJitter(_Transform):
    """With probability ``p``, brightness, contrast, saturation and hue changes in a random order,
    with the same random factors for all frames. RGB ``(..., 3, H, W)`` in [0, 1].

    Factors as torchvision draws them: brightness, contrast and saturation uniform in
    ``[max(0, 1 - x), 1 + x]``, the hue shift uniform in ``[-hue, hue]`` (turns); 0 disables one.
    Contrast blends with the mean luma of the whole clip, saturation with each pixel's luma.
    """

    _fields = ("brightness", "contrast", "saturation", "hue", "p")

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        p: float = 0.8,
    ) -> None:
        self.brightness = _number("brightness", brightness, 0.0)
        self.contrast = _number("contrast", contrast, 0.0)
        self.saturation = _number("saturation", saturation, 0.0)
        self.hue = _number("hue", hue, 0.0, 0.5)
        self.p = _probability("p", p)

    def get_params(self) -> JitterParams:
        """A random order and random factors (``None`` for the disabled adjustments)."""
        order = tuple(_JITTER_NAMES[i] for i in torch.randperm(4).tolist())
        factors = {}
        for name in _JITTER_NAMES:
            x = getattr(self, name)
            if x == 0:
                factors[name] = None
            else:
                factors[name] = _uniform(-x, x) if name == "hue" else _uniform(max(0, 1 - x), 1 + x)
        return JitterParams(order, **factors)

    def apply(self, clip: torch.Tensor, params: JitterParams) -> torch.Tensor:
        """Apply the adjustments of ``params`` in its order, deterministically."""
        _check_clip(clip, "ColorJitter", channels=3)
        for name in params.order:
            if name not in _ADJUST:
                raise ValueError(f"params.order must name {_JITTER_NAMES}, got {params.order!r}")
            factor = getattr(params, name)
            if factor is not None:
                clip = _ADJUST[name](clip, factor)
        return clip

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "ColorJitter", channels=3)
        return self.apply(clip, self.get_params()) if _coin(self.p) else clip


class RandomGrayscale(_Transform):
    """With probability ``p``, every frame becomes its 601-2 luma on all 3 channels."""

    _fields = ("p",)

    def __init__(self, p: float = 0.2) -> None:
        self.p = _probability("p", p)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "RandomGrayscale", channels=3)
        if not _coin(self.p):
            return clip
        return _luma(clip).unsqueeze(-3).expand(clip.shape).contiguous()


class GaussianBlur(_Transform):
    """With probability ``p``, a Gaussian blur with one ``sigma`` (pixels, uniform in the range)
    for all frames: separable kernel of ``2 * ceil(3 * sigma) + 1`` taps summing to 1, reflect
    padding (replicate where the frames are too small to reflect)."""

    _fields = ("sigma", "p")

    def __init__(self, sigma: float | Sequence[float] = (0.1, 2.0), p: float = 0.5) -> None:
        if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
            sigma = (sigma, sigma)
        self.sigma = _range("sigma", sigma, 0.0)
        self.p = _probability("p", p)

    def apply(self, clip: torch.Tensor, sigma: float) -> torch.Tensor:
        """Blur ``(..., C, H, W)`` with the given ``sigma``, deterministically."""
        _check_clip(clip, "GaussianBlur")
        sigma = _number("sigma", sigma, 0.0, open_low=True)
        radius = math.ceil(3 * sigma)
        x = torch.arange(-radius, radius + 1, dtype=clip.dtype, device=clip.device)
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        channels, height, width = clip.shape[-3:]
        mode = "reflect" if radius < min(height, width) else "replicate"
        frames = F.pad(clip.reshape(-1, channels, height, width), (radius,) * 4, mode=mode)
        frames = F.conv2d(
            frames, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels
        )
        frames = F.conv2d(
            frames, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels
        )
        return frames.reshape(clip.shape)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "GaussianBlur")
        return self.apply(clip, _uniform(*self.sigma)) if _coin(self.p) else clip


class Normalize(_Transform):
    """``(clip - mean) / std`` per channel (dim -3) of a float ``(..., C, H, W)``."""

    _fields = ("mean", "std")

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(_number(f"mean[{i}]", m) for i, m in enumerate(_sequence("mean", mean)))
        std = _sequence("std", std, len(self.mean))
        self.std = tuple(_number(f"std[{i}]", s, 0.0, open_low=True) for i, s in enumerate(std))

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "Normalize", channels=len(self.mean))
        mean = torch.tensor(self.mean, dtype=clip.dtype, device=clip.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=clip.dtype, device=clip.device).view(-1, 1, 1)
        return (clip - mean) / std


class ErasingParams(NamedTuple):
    """One :class:`RandomErasing` box, the same for all frames: ``(top, left, height, width)``
    in pixels, and the ``fill``, broadcastable to ``(C, height, width)``."""

    top: int
    left: int
    height: int
    width: int
    fill: torch.Tensor


class RandomErasing(_Transform):
    """With probability ``p``, replace one random box of every frame (the same box for all
    frames) by ``value``: float ``(..., C, H, W)``, normally after :class:`Normalize`.

    timm's ``RandomErasing`` with one box, the one Video Swin's Something-Something recipe uses
    (``RandomErasing(probability=0.25)``, mode ``'const'``, frame by frame with the random state
    reset so that every frame gets the same box): up to ``attempts`` draws of an area fraction
    uniform in ``scale`` and a height/width ``ratio`` whose log is uniform in ``log(ratio)``,
    ``h = round(sqrt(area * ratio))``, ``w = round(sqrt(area / ratio))``; the first with
    ``h < H`` and ``w < W`` is placed uniformly; if none fits nothing is erased. The defaults
    are timm's, ``ratio`` up to ``1 / 0.3`` (torchvision stops at 3.3).

    ``value``: a number (timm's ``'const'`` mode: 0, the mean colour after normalisation), one
    per channel, ``"random"`` (timm's ``'rand'``: one standard-normal colour per channel) or
    ``"pixel"`` (timm's ``'pixel'``: standard-normal noise per pixel, the same for all frames).
    """

    _fields = ("p", "scale", "ratio", "value", "attempts")

    def __init__(
        self,
        p: float = 0.25,
        scale: Sequence[float] = (0.02, 1 / 3),
        ratio: Sequence[float] = (0.3, 1 / 0.3),
        value: float | Sequence[float] | str = 0.0,
        attempts: int = 10,
    ) -> None:
        self.p = _probability("p", p)
        self.scale = _range("scale", scale, 0.0, 1.0)
        self.ratio = _range("ratio", ratio, 0.0)
        if isinstance(value, str):
            if value not in ("random", "pixel"):
                raise ValueError(f"value must be a number, 'random' or 'pixel', got {value!r}")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = _number("value", value)
        else:
            value = tuple(
                _number(f"value[{i}]", v) for i, v in enumerate(_sequence("value", value))
            )
        self.value = value
        self.attempts = _int("attempts", attempts)

    def get_params(
        self, channels: int, height: int, width: int, dtype: torch.dtype = torch.float32
    ) -> ErasingParams | None:
        """A box for ``height x width`` frames and its fill, or ``None`` when no attempt fits
        (the probability ``p`` is drawn in ``__call__``)."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(self.attempts):
            target = area * _uniform(*self.scale)
            ratio = math.exp(_uniform(*log_ratio))
            h = round(math.sqrt(target * ratio))
            w = round(math.sqrt(target / ratio))
            if h < height and w < width:
                top, left = _randint(0, height - h), _randint(0, width - w)
                return ErasingParams(top, left, h, w, self._fill(channels, h, w, dtype))
        return None

    def _fill(self, channels: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        if self.value == "random":
            return torch.randn(channels, 1, 1, dtype=dtype)
        if self.value == "pixel":
            return torch.randn(channels, height, width, dtype=dtype)
        if isinstance(self.value, tuple):
            if len(self.value) != channels:
                raise ValueError(
                    f"RandomErasing: value has {len(self.value)} channels, the clip {channels}"
                )
            return torch.tensor(self.value, dtype=dtype).view(-1, 1, 1)
        return torch.full((channels, 1, 1), self.value, dtype=dtype)

    def apply(self, clip: torch.Tensor, params: ErasingParams) -> torch.Tensor:
        """``clip`` (not changed) with the box of ``params`` filled in every frame."""
        _check_clip(clip, "RandomErasing")
        top, left, height, width, fill = params
        out = clip.clone()
        out[..., top : top + height, left : left + width] = fill.to(clip.device, clip.dtype)
        return out

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "RandomErasing")
        if not _coin(self.p):
            return clip
        params = self.get_params(*clip.shape[-3:], dtype=clip.dtype)
        return clip if params is None else self.apply(clip, params)


class ToCTHW(_Transform):
    """``(..., T, C, H, W) -> (..., C, T, H, W)``, contiguous."""

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "ToCTHW", min_dims=4)
        return clip.transpose(-4, -3).contiguous()
