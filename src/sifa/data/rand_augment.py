"""RandAugment for whole clips: one draw per clip, the same operations on every frame.

:class:`RandAugment` takes a float RGB clip ``(..., 3, H, W)`` in [0, 1] (after the crop, before
:class:`~sifa.data.transforms.Normalize`) and returns one of the same shape. Each call draws
``n`` operations with replacement (as torchvision and the SIFA release do), each with its random
sign or position, and applies them in the drawn order with the same parameters to every frame.
The magnitude of every operation is ``m / levels`` of its maximum.

Two operation sets (``f = m / levels``; "signed": the sign is random, even odds):

- ``ops="standard"``: the 14 operations of the RandAugment paper with torchvision's ranges
  (``torchvision.transforms.RandAugment``; its magnitude index ``m`` with the default 31 bins
  is ``levels=30``): Identity; ShearX, ShearY (factor ``0.3 f``, signed); TranslateX,
  TranslateY (``int(150 / 331 f W)`` / ``int(150 / 331 f H)`` whole pixels, signed); Rotate
  (``30 f`` degrees, signed); Brightness, Color, Contrast, Sharpness (factor ``1 + 0.9 f``,
  signed: ``1 - 0.9 f``); Posterize (``8 - round(4 f)`` bits); Solarize (threshold
  ``255 (1 - f)``, so even ``m = 0`` inverts the value 255, as torchvision); AutoContrast;
  Equalize.
- ``ops="released"``: the 16 operations of the SIFA authors' release (its
  ``util/clip_augmentations.py``, after ildoonet/pytorch-randaugment): AutoContrast; Equalize;
  Invert; Rotate (``30 f`` degrees, signed); Posterize (``4 - int(4 f)`` bits; 0 bits make the
  clip black); Solarize (threshold ``256 - 256 f``); SolarizeAdd (``110 f`` added to values
  below 128); Color, Contrast, Brightness, Sharpness (factor ``1 - 0.9 f``, signed); ShearX,
  ShearY (``0.3 f``, signed); Cutout (a square of side ``0.3571 f`` of the width around a
  uniform point, clipped, filled with RGB (125, 123, 114) / 255); TranslateX, TranslateY
  (``0.4464 f`` of the width / height, fractional pixels, signed).

How each operation works (the parameter units are those of :class:`AugmentOp`):

- Geometric operations (ShearX/Y, TranslateX/Y, Rotate) map output pixel centres to input
  points as PIL's affine transform does (pixel centres at ``x + 0.5``; the input pixel whose
  square holds the point, i.e. nearest neighbour with ties going up), black (0) outside, which
  is what the release gets from PIL. They differ from PIL only where a sample point lies within
  about 1e-3 pixel of a pixel edge (PIL steps its coordinates in 16.16 fixed point), and from
  torchvision's tensor path (``grid_sample``, nearest, ties to even) only on exact ties.
- Posterize, Solarize, SolarizeAdd, AutoContrast and Equalize have uint8 semantics: the clip is
  quantised to 0..255 (rounded) and mapped as ``PIL.ImageOps`` maps a uint8 image; their output
  is a multiple of 1/255. Brightness, Color, Contrast and Sharpness blend in float (no uint8
  truncation, unlike PIL's ``Image.blend``), Invert is ``1 - x``.
- Image statistics are taken over the **whole clip**, so every frame gets the same mapping:
  AutoContrast stretches each channel between its minimum and maximum over all frames, Equalize
  uses each channel's histogram over all frames, Contrast blends with the mean luma of all
  frames. The release applied PIL per frame, so each frame had its own statistics (its own
  mapping); on a clip of one frame the two agree.

Randomness comes only from torch's global RNG, so a dataset's per-item seeding makes every draw
reproducible. :meth:`RandAugment.get_params` draws, :meth:`RandAugment.apply` is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from sifa.data.transforms import (
    _blend,
    _brightness,
    _check_clip,
    _coin,
    _contrast,
    _int,
    _number,
    _randint,
    _saturation,
    _Transform,
    _uniform,
)

__all__ = [
    "RAND_AUGMENT_OPS",
    "RELEASED_OPS",
    "STANDARD_OPS",
    "AugmentOp",
    "RandAugment",
    "RandAugmentParams",
]

# In the order each source lists them (a draw is an index into the tuple).
STANDARD_OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
RELEASED_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "Cutout",
    "TranslateX",
    "TranslateY",
)
RAND_AUGMENT_OPS = {"standard": STANDARD_OPS, "released": RELEASED_OPS}

# The release's Cutout colour, RGB on the uint8 scale.
CUTOUT_FILL = (125, 123, 114)


class AugmentOp(NamedTuple):
    """One operation of a draw and its parameter (``None`` for those without one):

    - ShearX / ShearY: factor ``s``; output pixel ``(x, y)`` shows input point ``(x + s y, y)``
      / ``(x, y + s x)`` (pixel centres, from the top-left corner).
    - TranslateX / TranslateY: pixels ``t``; output ``(x, y)`` shows input ``(x + t, y)`` /
      ``(x, y + t)`` (the content moves by ``-t``).
    - Rotate: degrees, counter-clockwise about the frame centre.
    - Brightness, Color, Contrast, Sharpness: blend factor, 1 leaves the clip unchanged.
    - Posterize: bits kept, 0-8. Solarize: threshold on the 0..255 scale, values at or above it
      are inverted. SolarizeAdd: amount (0..255 scale) added to values below 128.
    - Cutout: box ``(top, left, height, width)`` in pixels.
    - Identity, Invert, AutoContrast, Equalize: ``None``.
    """

    name: str
    value: float | int | tuple[int, int, int, int] | None = None


class RandAugmentParams(NamedTuple):
    """One :class:`RandAugment` draw: the operations in the order they are applied."""

    ops: tuple[AugmentOp, ...]


class RandAugment(_Transform):
    """RandAugment with one draw per clip (module docstring): float RGB ``(..., 3, H, W)`` in
    [0, 1] -> the same shape.

    ``n`` operations drawn with replacement from ``ops`` (``"standard"`` or ``"released"``),
    each at magnitude ``m`` on a scale of 0 to ``levels`` (10 in timm, 30 in the release and in
    torchvision's default 31 bins).
    """

    _fields = ("n", "m", "levels", "ops")

    def __init__(self, n: int = 2, m: float = 9.0, levels: int = 10, ops: str = "standard"):
        self.n = _int("n", n)
        self.levels = _int("levels", levels)
        self.m = _number("m", m, 0.0, self.levels)
        if ops not in RAND_AUGMENT_OPS:
            raise ValueError(f"ops must be one of {tuple(RAND_AUGMENT_OPS)}, got {ops!r}")
        self.ops = ops

    @property
    def names(self) -> tuple[str, ...]:
        """The operations a draw picks from, in draw-index order."""
        return RAND_AUGMENT_OPS[self.ops]

    def op_params(self, name: str, height: int, width: int) -> AugmentOp:
        """Operation ``name`` at this magnitude for ``height x width`` frames, with its random
        sign (or Cutout position) drawn."""
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of the {self.ops!r} operations {self.names}")
        magnitude = _MAGNITUDES[self.ops](name, self.m / self.levels, height, width)
        if name not in _SIGNED:
            return AugmentOp(name, magnitude)
        if _coin(0.5):
            magnitude = -magnitude
        if name in _FACTORS:
            # torchvision enhances by 1 + v, the release by 1 - v.
            return AugmentOp(name, 1.0 + magnitude if self.ops == "standard" else 1.0 - magnitude)
        return AugmentOp(name, magnitude)

    def get_params(self, height: int, width: int) -> RandAugmentParams:
        """A random draw of ``n`` operations for ``height x width`` frames."""
        names = self.names
        return RandAugmentParams(
            tuple(
                self.op_params(names[_randint(0, len(names) - 1)], height, width)
                for _ in range(self.n)
            )
        )

    def apply(self, clip: torch.Tensor, params: RandAugmentParams) -> torch.Tensor:
        """Apply the operations of ``params`` in order, deterministically, to every frame."""
        _check_clip(clip, "RandAugment", channels=3)
        for op in params.ops:
            if op.name not in _APPLY:
                raise ValueError(f"unknown operation {op.name!r}; known: {tuple(_APPLY)}")
            clip = _APPLY[op.name](clip, op.value)
        return clip

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip, "RandAugment", channels=3)
        return self.apply(clip, self.get_params(*clip.shape[-2:]))


_FACTORS = ("Brightness", "Color", "Contrast", "Sharpness")
_SIGNED = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", *_FACTORS)


def _standard_magnitude(name: str, f: float, height: int, width: int):
    """torchvision's magnitude of ``name`` at the fraction ``f`` of its maximum (unsigned),
    or the parameter itself for the unsigned operations."""
    if name in ("ShearX", "ShearY"):
        return 0.3 * f
    if name == "TranslateX":
        return float(int(150.0 / 331.0 * width * f))
    if name == "TranslateY":
        return float(int(150.0 / 331.0 * height * f))
    if name == "Rotate":
        return 30.0 * f
    if name in _FACTORS:
        return 0.9 * f
    if name == "Posterize":
        return 8 - round(4 * f)
    if name == "Solarize":
        return 255.0 * (1.0 - f)
    return None


def _released_magnitude(name: str, f: float, height: int, width: int):
    """The release's magnitude of ``name`` at the fraction ``f`` (unsigned), or the parameter
    itself for the unsigned operations; Cutout draws its centre here."""
    if name in ("ShearX", "ShearY"):
        return 0.3 * f
    if name == "TranslateX":
        return 0.4464 * f * width
    if name == "TranslateY":
        return 0.4464 * f * height
    if name == "Rotate":
        return 30.0 * f
    if name in _FACTORS:
        return 0.9 * f
    if name == "Posterize":
        return 4 - int(4 * f)
    if name == "Solarize":
        return 256.0 - 256.0 * f
    if name == "SolarizeAdd":
        return 110.0 * f
    if name == "Cutout":
        # The release draws the centre with np.random.uniform(w), which is uniform in (1, w]
        # (low=w, high=1): an accident; here it is uniform over the frame.
        centre_x, centre_y = _uniform(0.0, width), _uniform(0.0, height)
        return cutout_box(centre_x, centre_y, 0.3571 * f * width, height, width)
    return None


_MAGNITUDES = {"standard": _standard_magnitude, "released": _released_magnitude}


def cutout_box(
    centre_x: float, centre_y: float, side: float, height: int, width: int
) -> tuple[int, int, int, int]:
    """The release's Cutout square ``(top, left, h, w)``: corner ``int(max(0, centre - side /
    2))`` on each axis, far corner ``min(size, corner + side)``, both corners filled as PIL's
    ``ImageDraw.rectangle`` fills them (so ``int(side) + 1`` pixels unless clipped)."""
    left = int(max(0.0, centre_x - side / 2.0))
    top = int(max(0.0, centre_y - side / 2.0))
    right = min(int(min(width, left + side)), width - 1)
    bottom = min(int(min(height, top + side)), height - 1)
    return top, left, bottom - top + 1, right - left + 1


# ---------------------------------------------------------------------------------------------
# The operations: float clip (..., 3, H, W) and the op's value -> float clip


def affine_nearest(clip: torch.Tensor, matrix: Sequence[float], fill: float = 0.0) -> torch.Tensor:
    """PIL's affine transform with nearest resampling: output pixel ``(x, y)`` (column, row)
    takes the input pixel ``(floor(u), floor(v))`` for ``u = a x' + b y' + c``,
    ``v = d x' + e y' + f`` at the pixel centre ``(x', y') = (x + 0.5, y + 0.5)``, and ``fill``
    where that pixel is outside the frame. ``matrix`` is ``(a, b, c, d, e, f)``; one index map
    for all frames and channels of ``(..., H, W)``."""
    a, b, c, d, e, f = (float(v) for v in matrix)
    height, width = clip.shape[-2:]
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    ys = torch.arange(height, dtype=torch.float64).unsqueeze(1) + 0.5
    u = (a * xs + b * ys + c).floor()
    v = (d * xs + e * ys + f).floor()
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    # Outside pixels read an extra fill value after the last pixel of each frame.
    index = torch.where(inside, v * width + u, height * width).long().flatten()
    # (a 2-D index_select: several times faster than on more dims on the CPU)
    frames = F.pad(clip.reshape(-1, height * width), (0, 1), value=fill)
    return frames.index_select(1, index.to(clip.device)).view(clip.shape)


def _shear_x(clip: torch.Tensor, s: float) -> torch.Tensor:
    return clip if s == 0 else affine_nearest(clip, (1.0, s, 0.0, 0.0, 1.0, 0.0))


def _shear_y(clip: torch.Tensor, s: float) -> torch.Tensor:
    return clip if s == 0 else affine_nearest(clip, (1.0, 0.0, 0.0, s, 1.0, 0.0))


def _translate_x(clip: torch.Tensor, t: float) -> torch.Tensor:
    return clip if t == 0 else affine_nearest(clip, (1.0, 0.0, t, 0.0, 1.0, 0.0))


def _translate_y(clip: torch.Tensor, t: float) -> torch.Tensor:
    return clip if t == 0 else affine_nearest(clip, (1.0, 0.0, 0.0, 0.0, 1.0, t))


def _rotate(clip: torch.Tensor, degrees: float) -> torch.Tensor:
    """Counter-clockwise about the frame centre ``(W / 2, H / 2)``, as ``PIL.Image.rotate``
    (nearest, no expansion, black corners)."""
    if degrees % 360 == 0:
        return clip
    height, width = clip.shape[-2:]
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    cx, cy = width / 2.0, height / 2.0
    # u - cx = cos (x' - cx) - sin (y' - cy);  v - cy = sin (x' - cx) + cos (y' - cy)
    matrix = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
    return affine_nearest(clip, matrix)


def _sharpness(clip: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter (3x3, centre weight 5 of 13) of the inner pixels; the
    border pixels keep their values (as PIL and torchvision)."""
    height, width = clip.shape[-2:]
    if factor == 1 or height < 3 or width < 3:
        return clip
    rows = clip[..., :-2, :] + clip[..., 1:-1, :] + clip[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    inner = clip[..., 1:-1, 1:-1]
    smooth = (box + 4.0 * inner) / 13.0
    out = clip.clone()
    out[..., 1:-1, 1:-1] = _blend(inner, smooth, factor)
    return out


def _quantise(clip: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> the uint8 values 0..255 (rounded), kept as floats."""
    return clip.mul(255.0).round_().clamp_(0.0, 255.0)


def _apply_luts(q: torch.Tensor, luts: list[list[int]]) -> torch.Tensor:
    """Map each channel of ``q`` (uint8 values as floats, ``(..., C, H, W)``) through its
    256-entry table of uint8 values -> [0, 1]."""
    tables = torch.tensor(luts, dtype=q.dtype, device=q.device).div_(255.0)
    index = q + _channel_offsets(q)
    return tables.view(-1).index_select(0, index.long().view(-1)).view(q.shape)


def _channel_offsets(q: torch.Tensor) -> torch.Tensor:
    """``256 c`` for channel ``c``, shaped to broadcast over ``(..., C, H, W)``."""
    return torch.arange(q.shape[-3], dtype=q.dtype, device=q.device).view(-1, 1, 1) * 256.0


def _posterize(clip: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top ``bits`` of each uint8 value (0 bits: black), as ``PIL.ImageOps.posterize``
    (whose older versions also took 0)."""
    bits = int(bits)
    if bits >= 8:
        return clip
    step = 2.0 ** (8 - bits)
    return _quantise(clip).div_(step).floor_().mul_(step / 255.0)


def _at_least(q: torch.Tensor, k: int) -> torch.Tensor:
    """1.0 where the whole number ``q`` is at least ``k``, else 0.0 (faster than a bool mask)."""
    return (q - (k - 1)).clamp_(0.0, 1.0)


def _solarize(clip: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the uint8 values at or above ``threshold`` (``PIL.ImageOps.solarize``)."""
    q = _quantise(clip)
    # On whole numbers, >= threshold is >= its ceiling.
    inverted = _at_least(q, math.ceil(threshold))
    return q.addcmul_(inverted, 255.0 - 2.0 * q).div_(255.0)


def _solarize_add(clip: torch.Tensor, amount: float) -> torch.Tensor:
    """Add ``amount`` to the uint8 values below 128, truncated and capped at 255 (the release's
    numpy: ``clip(v + amount, 0, 255).astype(uint8)``)."""
    q = _quantise(clip)
    below = 1.0 - _at_least(q, 128)
    return q.add_(below, alpha=math.floor(amount)).clamp_(max=255.0).div_(255.0)


def _autocontrast(clip: torch.Tensor, _=None) -> torch.Tensor:
    """Stretch each channel from its minimum..maximum over the whole clip to 0..255, as
    ``PIL.ImageOps.autocontrast`` (cutoff 0) does for one image; a constant channel stays."""
    q = _quantise(clip)
    dims = [d for d in range(q.dim()) if d != q.dim() - 3]
    luts = []
    for lo, hi in zip(q.amin(dims).int().tolist(), q.amax(dims).int().tolist(), strict=True):
        if hi <= lo:
            luts.append(list(range(256)))
            continue
        scale = 255.0 / (hi - lo)
        offset = -lo * scale
        luts.append([min(255, max(0, int(i * scale + offset))) for i in range(256)])
    return _apply_luts(q, luts)


def _equalize(clip: torch.Tensor, _=None) -> torch.Tensor:
    """Histogram equalisation of each channel with its histogram over the whole clip, as
    ``PIL.ImageOps.equalize`` (and torchvision) for one image."""
    q = _quantise(clip)
    channels = q.shape[-3]
    counts = torch.bincount((q + _channel_offsets(q)).long().view(-1), minlength=256 * channels)
    luts = []
    for histogram in counts.view(channels, 256).tolist():
        used = [count for count in histogram if count]
        step = (sum(used) - used[-1]) // 255 if len(used) > 1 else 0
        if not step:
            luts.append(list(range(256)))
            continue
        lut, n = [], step // 2
        for count in histogram:
            lut.append(min(255, n // step))
            n += count
        luts.append(lut)
    return _apply_luts(q, luts)


def _invert(clip: torch.Tensor, _=None) -> torch.Tensor:
    return 1.0 - clip


def _cutout(clip: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, height, width = (int(v) for v in box)
    fill = torch.tensor(CUTOUT_FILL, dtype=clip.dtype, device=clip.device).div_(255.0)
    out = clip.clone()
    out[..., top : top + height, left : left + width] = fill.view(-1, 1, 1)
    return out


def _identity(clip: torch.Tensor, _=None) -> torch.Tensor:
    return clip


def _factor(adjust):
    return lambda clip, factor: clip if factor == 1 else adjust(clip, factor)


_APPLY = {
    "Identity": _identity,
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Rotate": _rotate,
    "Brightness": _factor(_brightness),
    "Color": _factor(_saturation),
    "Contrast": _factor(_contrast),
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
    "Invert": _invert,
    "Cutout": _cutout,
}
