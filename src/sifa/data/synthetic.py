"""A synthetic video classification task that only temporal order can solve.

Every clip shows one textured square (the object) over a static photographic background, with
one to three small photo patches drifting around as distractors. The clip has two halves of
equal length, each a motion primitive (a *phase*) of the object: a translation (``right``,
``left``, ``up``, ``down``), a rotation about its centre (``clockwise``, ``counterclockwise``,
as seen on screen) or a geometric zoom (``zoom_in``, ``zoom_out``).

Classes come in pairs with the same two phases in opposite order: for pair ``p = (A, B)``,
class ``2p`` is "A then B" and class ``2p + 1`` is "B then A". Both halves are rendered from
their own random parameters (start position, speed, start angle and scale, distractor
motion) drawn in the pair's canonical order, so for the same seed and video index the clip of
class ``2p + 1`` is exactly the clip of class ``2p`` with its halves swapped, frame for frame.
Each half spans whole :data:`WINDOW`-frame windows, hence:

- A per-frame network with order-blind temporal pooling (average, max) sees the same
  multiset of frames for both classes of a pair (for every draw, hence also in distribution),
  so however long it trains it stays at chance within each pair: about 50% accuracy overall
  at best, where it tells the pairs apart (single frames only hint at the pair, through how
  the object's position, angle and size spread over the clip).
- The same holds for any model that pools :data:`WINDOW`-frame windows without order.
- A network that relates frame ``t`` to frame ``t + 1`` sees the motion itself, and because the
  relation is directed, stacking such layers gives features that read "motion A, later motion
  B" (a frame's feature takes in frames ``t + 1``, ``t + 2``, ... layer after layer), which
  survives order-blind pooling and separates the two classes.

The photos come from the data folder shipped inside scikit-image (read as files, without
importing ``skimage``). :func:`make_synthetic_dataset` writes the task as mp4 files with
``video_list`` annotation files, ready for :class:`sifa.data.annotations.DatasetSpec`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sifa.data.encoding import H264Writer
from sifa.files import replace_atomically

PHASES = (
    "right",
    "left",
    "up",
    "down",
    "clockwise",
    "counterclockwise",
    "zoom_in",
    "zoom_out",
)
PAIRS = (
    ("right", "up"),
    ("left", "down"),
    ("clockwise", "zoom_in"),
    ("counterclockwise", "zoom_out"),
)
WINDOW = 4  # frames per window; each phase spans whole windows
PHOTO_FILES = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "retina.jpg",
    "ihc.png",
)
FORMAT_VERSION = 1  # bump when the rendering changes, so old folders no longer count as complete

_DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
_REFERENCE_SIZE = 64  # pixel speeds below are given at this frame size and scale with it
_TRANSLATION_SPEED = (1.5, 3.0)  # pixels per frame at the reference size
_ROTATION_SPEED = (6.0, 12.0)  # degrees per frame
_ZOOM_RATE = (1.06, 1.12)  # scale factor per frame
_STATIC_SCALE = (0.8, 1.2)  # object scale in phases that do not zoom
_MIN_ZOOM_SCALE = 0.6
_OBJECT_SIDE = 0.25  # object side at scale 1, as a fraction of the frame size
_DISTRACTOR_SIDE = (0.08, 0.14)  # fraction of the frame size
_DISTRACTOR_SPEED = (0.3, 1.0)  # pixels per frame at the reference size
_MARGIN = 1.5  # pixels kept between the object (with its anti-aliased edge) and the frame edge


# ----------------------------------------------------------------------------- classes


def _check_num_pairs(num_pairs: int) -> None:
    if not _is_int(num_pairs) or not 1 <= num_pairs <= len(PAIRS):
        raise ValueError(f"num_pairs must be an integer in 1..{len(PAIRS)}, got {num_pairs!r}")


def class_names(num_pairs: int = 4) -> list[str]:
    """Names of the ``2 * num_pairs`` classes in label order, e.g. ``right_then_up``."""
    _check_num_pairs(num_pairs)
    names = []
    for first, second in PAIRS[:num_pairs]:
        names += [f"{first}_then_{second}", f"{second}_then_{first}"]
    return names


def class_phases(label: int, num_pairs: int = 4) -> tuple[str, str]:
    """The two phases of class ``label`` in the order they are shown."""
    _check_num_pairs(num_pairs)
    if not _is_int(label) or not 0 <= label < 2 * num_pairs:
        raise ValueError(f"label must be in 0..{2 * num_pairs - 1}, got {label!r}")
    first, second = PAIRS[label // 2]
    return (first, second) if label % 2 == 0 else (second, first)


def phase_boundaries(frames: int) -> list[int]:
    """Frame indices where the phases of a ``frames``-frame clip start: ``[0, frames // 2]``."""
    if not _is_int(frames) or frames <= 0 or frames % (2 * WINDOW):
        raise ValueError(
            f"frames must be a positive multiple of {2 * WINDOW} (two phases of whole "
            f"{WINDOW}-frame windows), got {frames!r}"
        )
    return [0, frames // 2]


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- photos


def _skimage_data_folder() -> Path:
    """scikit-image's shipped data folder, found without importing the (slow) package."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the synthetic dataset takes its photos from the scikit-image package, which is not "
            "installed: pip install scikit-image"
        )
    return Path(spec.submodule_search_locations[0]) / "data"


@functools.cache
def _photos() -> tuple[Image.Image, ...]:
    """The photos of :data:`PHOTO_FILES` as RGB images, read once per process."""
    folder = _skimage_data_folder()
    missing = [name for name in PHOTO_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the installed scikit-image lacks the photos {missing} in {folder}; the synthetic "
            "dataset needs all of them"
        )
    photos = []
    for name in PHOTO_FILES:
        with Image.open(folder / name) as image:
            photos.append(image.convert("RGB"))
    return tuple(photos)


def _random_crop(
    rng: np.random.Generator, side: int, min_fraction: float, tries: int = 1
) -> np.ndarray:
    """A random square crop of a random photo, resized to float32 ``(side, side, 3)`` in [0, 1].

    The crop covers ``min_fraction``..1 of the photo's shorter side; of ``tries`` crops of the
    same photo the most varied one is kept (photos such as retina.jpg have flat black corners).
    """
    photo = _photos()[rng.integers(len(PHOTO_FILES))]
    width, height = photo.size
    crops = []
    for _ in range(tries):
        crop = rng.uniform(min_fraction, 1.0) * min(width, height)
        left = rng.uniform(0.0, width - crop)
        top = rng.uniform(0.0, height - crop)
        box = (left, top, left + crop, top + crop)
        resized = photo.resize((side, side), Image.Resampling.BILINEAR, box=box)
        crops.append(np.asarray(resized, dtype=np.float32) / 255.0)
    return max(crops, key=np.std)


def _stretch(texture: np.ndarray) -> np.ndarray:
    """Contrast stretch from the 2nd..98th percentile to [0, 1], so the object stands out."""
    low, high = np.percentile(texture, [2.0, 98.0])
    return np.clip((texture - low) / max(high - low, 0.1), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- random draws


@dataclass(frozen=True)
class _Shared:
    """What both phases of a video share."""

    background: np.ndarray  # float32 (size, size, 3) in [0, 1]
    texture: np.ndarray  # float32 (T, T, 3), the object's face with its border
    side: float  # object side at scale 1, pixels
    distractors: tuple[np.ndarray, ...]  # float32 (t, t, 3) textures
    distractor_sides: tuple[float, ...]  # pixels


@dataclass(frozen=True)
class _Motion:
    """Per-frame geometry of one phase: object and distractors."""

    centre: np.ndarray  # (L, 2) x, y in pixels from the image's top-left corner
    angle: np.ndarray  # (L,) degrees, clockwise on screen
    scale: np.ndarray  # (L,)
    distractor_centres: tuple[np.ndarray, ...]  # each (L, 2)


def _draw_shared(rng: np.random.Generator, size: int) -> _Shared:
    background = _random_crop(rng, size, 0.3)
    contrast = rng.uniform(0.35, 0.6)
    background = background * contrast + rng.uniform(0.05, 0.2)
    texture_side = max(8, size // 2)
    texture = _stretch(_random_crop(rng, texture_side, 0.15, tries=3))
    # the border contrasts with the (mostly dark) background so the outline stays visible
    bright = background.mean() < 0.45 or rng.random() < 0.5
    border = rng.uniform(0.85, 1.0, 3) if bright else rng.uniform(0.0, 0.1, 3)
    width = max(1, round(0.06 * texture_side))
    texture[:width], texture[-width:], texture[:, :width], texture[:, -width:] = (border,) * 4
    side = _OBJECT_SIDE * size * rng.uniform(0.9, 1.1)
    count = int(rng.integers(1, 4))
    distractor_side = max(4, size // 8)
    distractors = tuple(_random_crop(rng, distractor_side, 0.1) for _ in range(count))
    sides = tuple(float(rng.uniform(*_DISTRACTOR_SIDE) * size) for _ in range(count))
    return _Shared(background.astype(np.float32), texture, side, distractors, sides)


def _fit_range(low: float, high: float, cap: float) -> tuple[float, float]:
    """``(low, high)`` scaled down, if needed, so that ``high <= cap`` (for long phases)."""
    return (low, high) if high <= cap else (low * cap / high, cap)


def _span(rng: np.random.Generator, size: int, extent: float, travel: float = 0.0) -> float:
    """A start coordinate keeping ``[start - extent, start + travel + extent]`` in the frame."""
    return rng.uniform(extent + _MARGIN, size - extent - _MARGIN - travel)


def _draw_motion(
    rng: np.random.Generator, phase: str, size: int, length: int, side: float, count: int
) -> _Motion:
    """The object's and distractors' motion during a ``length``-frame ``phase``."""
    steps = np.arange(length, dtype=np.float64)
    angle0 = rng.uniform(0.0, 90.0)
    if phase in _DIRECTIONS:
        centre, angle, scale = _translation(rng, phase, size, length, side, angle0)
    elif phase in ("clockwise", "counterclockwise"):
        scale0 = rng.uniform(*_STATIC_SCALE)
        extent = side * scale0 / math.sqrt(2.0)
        centre = np.tile([_span(rng, size, extent), _span(rng, size, extent)], (length, 1))
        speed = rng.uniform(*_ROTATION_SPEED) * (1.0 if phase == "clockwise" else -1.0)
        angle, scale = angle0 + speed * steps, np.full(length, scale0)
    else:
        centre, scale = _zoom(rng, phase, size, length, side)
        angle = np.full(length, angle0)
    return _Motion(centre, angle, scale, _distractor_tracks(rng, size, steps, count))


def _translation(
    rng: np.random.Generator, phase: str, size: int, length: int, side: float, angle0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale0 = rng.uniform(*_STATIC_SCALE)
    worst_extent = side * _STATIC_SCALE[1] / math.sqrt(2.0)
    cap = (size - 2.0 * (worst_extent + _MARGIN)) / max(length - 1, 1)
    low, high = _fit_range(*(v * size / _REFERENCE_SIZE for v in _TRANSLATION_SPEED), cap)
    speed = rng.uniform(low, high)
    travel = speed * (length - 1)
    radians = math.radians(angle0)
    extent = side * scale0 / 2.0 * (abs(math.cos(radians)) + abs(math.sin(radians)))
    dx, dy = _DIRECTIONS[phase]
    # along the motion the start leaves room for the travel; a backwards move starts far side
    along = _span(rng, size, extent, travel)
    across = _span(rng, size, extent)
    if dx + dy < 0:
        along = size - along
    start = np.array([along, across] if dx else [across, along])
    steps = np.arange(length, dtype=np.float64)[:, None]
    centre = start + steps * speed * np.array([dx, dy])
    return centre, np.full(length, angle0), np.full(length, scale0)


def _zoom(
    rng: np.random.Generator, phase: str, size: int, length: int, side: float
) -> tuple[np.ndarray, np.ndarray]:
    largest = (size / 2.0 - _MARGIN) * math.sqrt(2.0) / side  # scale filling the frame
    cap = (largest / _MIN_ZOOM_SCALE) ** (1.0 / max(length - 1, 1))
    rate = rng.uniform(*_fit_range(*_ZOOM_RATE, cap))
    growth = rate ** (length - 1)
    smallest = rng.uniform(_MIN_ZOOM_SCALE, largest / growth)
    extent = side * smallest * growth / math.sqrt(2.0)
    centre = np.tile([_span(rng, size, extent), _span(rng, size, extent)], (length, 1))
    exponent = np.arange(length, dtype=np.float64)
    if phase == "zoom_out":
        exponent = exponent[::-1]
    return centre, smallest * rate**exponent


def _distractor_tracks(
    rng: np.random.Generator, size: int, steps: np.ndarray, count: int
) -> tuple[np.ndarray, ...]:
    tracks = []
    for _ in range(count):
        start = rng.uniform(0.0, size, 2)
        speed = rng.uniform(*_DISTRACTOR_SPEED) * size / _REFERENCE_SIZE
        heading = rng.uniform(0.0, 2.0 * math.pi)
        velocity = speed * np.array([math.cos(heading), math.sin(heading)])
        tracks.append(start + steps[:, None] * velocity)
    return tuple(tracks)


def _draw_video(
    pair: int, index: int, size: int, frames: int, seed: int
) -> tuple[_Shared, _Motion, _Motion]:
    """Shared params, then phase A, then phase B of the pair (always in this order)."""
    rng = np.random.default_rng([seed, pair, index])
    shared = _draw_shared(rng, size)
    length = frames // 2
    count = len(shared.distractors)
    first, second = PAIRS[pair]
    motion_a = _draw_motion(rng, first, size, length, shared.side, count)
    motion_b = _draw_motion(rng, second, size, length, shared.side, count)
    return shared, motion_a, motion_b


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class ObjectGeometry:
    """The object's pose in every frame of a clip."""

    centre: np.ndarray  # (T, 2) x, y in pixels from the image's top-left corner
    angle: np.ndarray  # (T,) degrees, positive = clockwise on screen
    side: np.ndarray  # (T,) side of the square in pixels


@dataclass(frozen=True)
class ClipLayers:
    """A rendered clip with what it was made of (for tests and visual checks)."""

    frames: np.ndarray  # uint8 (T, H, W, 3), RGB
    background: np.ndarray  # uint8 (H, W, 3), the static background
    object_alpha: np.ndarray  # float32 (T, H, W), coverage of the object in [0, 1]
    distractor_alpha: np.ndarray  # float32 (T, H, W), distractors' coverage (under the object)
    geometry: ObjectGeometry
    phases: tuple[str, ...]  # (T,) the phase each frame belongs to


def _level(side: float, texels: int) -> int:
    """Texels to sample a ``texels``-wide texture from when it is shown ``side`` pixels wide:
    fewer when it is shown smaller, so zooming does not change the texture by aliasing."""
    return min(math.ceil(side), texels)


def _resize(texture: np.ndarray, texels: int) -> np.ndarray:
    """float32 ``(T, T, C)`` texture resized (anti-aliased) to ``(texels, texels, C)``."""
    if texels == texture.shape[0]:
        return texture
    channels = [
        np.asarray(
            Image.fromarray(texture[..., c]).resize((texels, texels), Image.Resampling.BILINEAR)
        )
        for c in range(texture.shape[-1])
    ]
    return np.stack(channels, -1)


def _sample(texture: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Bilinear lookup of float32 ``(T, T, C)`` at normalised coordinates ``gx``, ``gy`` (-1 and
    1 are the texture's outer edges; clamped at the border): ``(*gx.shape, C)``."""
    last = texture.shape[0] - 1
    x = np.clip(((gx + 1.0) * texture.shape[1] - 1.0) / 2.0, 0, last)
    y = np.clip(((gy + 1.0) * texture.shape[0] - 1.0) / 2.0, 0, last)
    x0, y0 = np.floor(x).astype(np.intp), np.floor(y).astype(np.intp)
    x1, y1 = np.minimum(x0 + 1, last), np.minimum(y0 + 1, last)
    wx, wy = (x - x0)[..., None].astype(np.float32), (y - y0)[..., None].astype(np.float32)
    top = texture[y0, x0] * (1 - wx) + texture[y0, x1] * wx
    bottom = texture[y1, x0] * (1 - wx) + texture[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _sprite(
    texture: np.ndarray, centre: np.ndarray, angle: np.ndarray, side: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A square texture warped onto ``L`` frames: colour ``(L, H, W, 3)`` and anti-aliased
    alpha ``(L, H, W, 1)``, float32; ``centre`` ``(L, 2)`` pixels, ``angle`` ``(L,)`` degrees
    clockwise, ``side`` ``(L,)`` pixels."""
    pixel = np.arange(size, dtype=np.float64) + 0.5
    dx = pixel[None, None, :] - centre[:, 0, None, None]
    dy = pixel[None, :, None] - centre[:, 1, None, None]
    radians = np.radians(angle)[:, None, None]
    # screen = R(angle) @ local with y down, so local = R(-angle) @ screen
    u = np.cos(radians) * dx + np.sin(radians) * dy
    v = -np.sin(radians) * dx + np.cos(radians) * dy
    half = side[:, None, None] / 2.0
    alpha = np.clip(half - np.abs(u) + 0.5, 0, 1) * np.clip(half - np.abs(v) + 0.5, 0, 1)
    gx, gy = u / half, v / half
    colour = np.zeros((len(side), size, size, texture.shape[-1]), np.float32)
    levels = np.array([_level(s, texture.shape[0]) for s in side])
    for level in np.unique(levels):
        # only where the sprite shows: the other pixels are multiplied by alpha = 0
        shown = (alpha > 0) & (levels == level)[:, None, None]
        colour[shown] = _sample(_resize(texture, int(level)), gx[shown], gy[shown])
    return colour, alpha[..., None].astype(np.float32)


def _render_phase(shared: _Shared, motion: _Motion, size: int) -> dict[str, np.ndarray]:
    """Float frames ``(L, H, W, 3)`` in [0, 1] and the alpha layers ``(L, H, W)`` of a phase."""
    length = len(motion.scale)
    image = np.repeat(shared.background[None], length, axis=0)
    covered = np.zeros((length, size, size, 1), np.float32)
    for texture, side, track in zip(
        shared.distractors, shared.distractor_sides, motion.distractor_centres, strict=True
    ):
        colour, alpha = _sprite(texture, track, np.zeros(length), np.full(length, side), size)
        image = image * (1 - alpha) + colour * alpha
        covered = 1 - (1 - covered) * (1 - alpha)
    sides = shared.side * motion.scale
    colour, alpha = _sprite(shared.texture, motion.centre, motion.angle, sides, size)
    image = image * (1 - alpha) + colour * alpha
    return {"image": image, "object_alpha": alpha[..., 0], "distractor_alpha": covered[..., 0]}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _check_render_args(index: int, size: int, frames: int, seed: int) -> None:
    phase_boundaries(frames)
    if not _is_int(size) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    if not _is_int(index) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _render_pair(
    pair: int, index: int, size: int, frames: int, seed: int
) -> tuple[_Shared, tuple[_Motion, _Motion], tuple[dict, dict]]:
    """The draws of video ``index`` of ``pair`` and the rendered layers of phases A and B."""
    shared, motion_a, motion_b = _draw_video(pair, index, size, frames, seed)
    layers = (_render_phase(shared, motion_a, size), _render_phase(shared, motion_b, size))
    return shared, (motion_a, motion_b), layers


def render_clip_layers(
    label: int, index: int, *, size: int = 64, frames: int = 16, seed: int = 0, num_pairs: int = 4
) -> ClipLayers:
    """Clip ``index`` of class ``label`` with its layers and the object's per-frame geometry."""
    phases = class_phases(label, num_pairs)
    _check_render_args(index, size, frames, seed)
    shared, motions, layers = _render_pair(label // 2, index, size, frames, seed)
    order = (0, 1) if label % 2 == 0 else (1, 0)

    def joined(key: str) -> np.ndarray:
        return np.concatenate([layers[i][key] for i in order])

    return ClipLayers(
        frames=_to_uint8(joined("image")),
        background=_to_uint8(shared.background),
        object_alpha=joined("object_alpha"),
        distractor_alpha=joined("distractor_alpha"),
        geometry=ObjectGeometry(
            centre=np.concatenate([motions[i].centre for i in order]),
            angle=np.concatenate([motions[i].angle for i in order]),
            side=shared.side * np.concatenate([motions[i].scale for i in order]),
        ),
        phases=tuple(phase for phase in phases for _ in range(frames // 2)),
    )


def render_clip(
    label: int, index: int, *, size: int = 64, frames: int = 16, seed: int = 0, num_pairs: int = 4
) -> np.ndarray:
    """Clip ``index`` of class ``label``: uint8 RGB ``(frames, size, size, 3)``."""
    return render_clip_layers(
        label, index, size=size, frames=frames, seed=seed, num_pairs=num_pairs
    ).frames


# ----------------------------------------------------------------------------- files


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int) -> None:
    """Write uint8 RGB ``(T, H, W, 3)`` frames (even ``H`` and ``W``) to an H.264 mp4
    (``yuv420p``, constant ``fps`` frames per second, CRF 18), atomically; the same frames
    give the same bytes every time (see :mod:`sifa.data.encoding`)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(
            f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}"
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs an even height and width, got {height}x{width}")
    if not _is_int(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")

    def encode(temporary: Path) -> None:
        with H264Writer(temporary, rate=int(fps), height=height, width=width, format="mp4") as out:
            for frame in frames:
                out.write(frame)

    replace_atomically(Path(path), encode)


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic dataset's settings: videos per class (train and val), frame ``size``
    (pixels, square, even), ``frames`` per clip, ``fps`` of the written files, the number of
    class pairs (2 classes each) and the random ``seed``."""

    videos_per_class: int = 100
    val_videos_per_class: int = 25
    size: int = 64
    frames: int = 16
    fps: int = 8
    num_pairs: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "videos_per_class": (lambda v: v >= 1, "an integer >= 1"),
            "val_videos_per_class": (lambda v: v >= 0, "an integer >= 0"),
            "size": (lambda v: v >= 16 and v % 2 == 0, "an even integer >= 16"),
            "frames": (
                lambda v: v >= 1 and v % (2 * WINDOW) == 0,
                f"a positive multiple of {2 * WINDOW}",
            ),
            "fps": (lambda v: v >= 1, "an integer >= 1"),
            "num_pairs": (lambda v: 1 <= v <= len(PAIRS), f"an integer in 1..{len(PAIRS)}"),
            "seed": (lambda v: v >= 0, "an integer >= 0"),
        }
        for name, (valid, wanted) in checks.items():
            value = getattr(self, name)
            if not _is_int(value) or not valid(value):
                raise ValueError(f"SyntheticConfig.{name} must be {wanted}, got {value!r}")


def _video_path(name: str, index: int) -> str:
    return f"videos/{name}/{name}_{index:04d}.mp4"


def _list_lines(config: SyntheticConfig, indices: range) -> list[str]:
    names = class_names(config.num_pairs)
    lines = [
        f"{_video_path(name, index)} {label}"
        for label, name in enumerate(names)
        for index in indices
    ]
    return sorted(lines)


def _splits(config: SyntheticConfig) -> dict[str, range]:
    """Video indices of each split: val continues after train, so no draw is shared."""
    train = config.videos_per_class
    return {"train": range(train), "val": range(train, train + config.val_videos_per_class)}


def _manifest(config: SyntheticConfig) -> dict:
    return {
        "generator": __name__,
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(config),
        "classes": class_names(config.num_pairs),
    }


def _read_lines(path: Path) -> list[str] | None:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def dataset_is_complete(out_dir: str | os.PathLike, config: SyntheticConfig) -> bool:
    """Whether ``out_dir`` holds the whole dataset of ``config`` (manifest, lists, videos)."""
    root = Path(out_dir)
    try:
        manifest = json.loads((root / "synthetic.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest != _manifest(config):
        return False
    if _read_lines(root / "classes.txt") != class_names(config.num_pairs):
        return False
    for split, indices in _splits(config).items():
        expected = _list_lines(config, indices)
        if _read_lines(root / f"{split}.txt") != expected:
            return False
        for line in expected:
            video = root / line.rsplit(maxsplit=1)[0]
            if not video.is_file() or video.stat().st_size == 0:
                return False
    return True


def _summary(root: Path, config: SyntheticConfig, generated: bool) -> dict:
    splits = _splits(config)
    classes = 2 * config.num_pairs
    return {
        "root": str(root),
        "train_list": str(root / "train.txt"),
        "val_list": str(root / "val.txt"),
        "classes_file": str(root / "classes.txt"),
        "manifest": str(root / "synthetic.json"),
        "class_names": class_names(config.num_pairs),
        "num_train": classes * len(splits["train"]),
        "num_val": classes * len(splits["val"]),
        "generated": generated,
    }


def make_synthetic_dataset(
    out_dir: str | os.PathLike, config: SyntheticConfig | None = None, *, progress: bool = True
) -> dict:
    """Write the dataset of ``config`` to ``out_dir``; skipped if it is already complete there.

    Layout: ``videos/<class>/<class>_<index:04d>.mp4``, ``train.txt`` and ``val.txt``
    (``relative/path.mp4 label`` lines), ``classes.txt`` (names in label order) and, written
    last, ``synthetic.json`` (the config): a folder without it is incomplete. Returns a summary
    with the paths, class names and video counts (``generated`` is False when reused).
    """
    config = SyntheticConfig() if config is None else config
    if not isinstance(config, SyntheticConfig):
        raise TypeError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    root = Path(out_dir)
    if dataset_is_complete(root, config):
        return _summary(root, config, generated=False)
    root.mkdir(parents=True, exist_ok=True)
    # mark the folder incomplete until everything below is written again
    (root / "synthetic.json").unlink(missing_ok=True)
    names = class_names(config.num_pairs)
    for name in names:
        (root / "videos" / name).mkdir(parents=True, exist_ok=True)
    _write_videos(root, config, names, progress)
    _write_text(root / "classes.txt", "".join(f"{name}\n" for name in names))
    for split, indices in _splits(config).items():
        _write_text(
            root / f"{split}.txt", "".join(f"{line}\n" for line in _list_lines(config, indices))
        )
    _write_text(root / "synthetic.json", json.dumps(_manifest(config), indent=2) + "\n")
    return _summary(root, config, generated=True)


def _write_videos(
    root: Path, config: SyntheticConfig, names: Sequence[str], progress: bool
) -> None:
    """Render each draw once and write both classes of its pair (halves swapped)."""
    from tqdm import tqdm

    total = config.videos_per_class + config.val_videos_per_class
    jobs = [(pair, index) for pair in range(config.num_pairs) for index in range(total)]
    with tqdm(
        total=2 * len(jobs), desc="synthetic videos", unit="video", disable=not progress
    ) as bar:
        for pair, index in jobs:
            _, _, layers = _render_pair(pair, index, config.size, config.frames, config.seed)
            first, second = (_to_uint8(part["image"]) for part in layers)
            for label, frames in ((2 * pair, (first, second)), (2 * pair + 1, (second, first))):
                path = root / _video_path(names[label], index)
                write_video(path, np.concatenate(frames), config.fps)
                bar.update()
