"""Milliseconds per clip of the training augmentations: each RandAugment operation, RandAugment
as a whole and random erasing, beside kornia's counterparts where kornia is installed.

Ours run on one float clip ``(T, 3, H, W)`` with one draw for the whole clip. kornia has no
clip-consistent RandAugment (``VideoSequential(..., same_on_frame=True)`` refuses it), so its
operations run on the clip's frames as a batch and draw their magnitudes, signs and boxes per
frame: the same pixels to compute, not the same augmentation. kornia is optional and never
imported elsewhere in sifa.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sifa.data.rand_augment import RELEASED_OPS, STANDARD_OPS, RandAugment, RandAugmentParams
from sifa.data.transforms import RandomErasing
from sifa.engine.resources import using_threads

# kornia.augmentation.auto.rand_augment.ops factory and magnitude range of each operation
# (kornia's RandAugment defaults; translations as fractions of the size, near torchvision's).
KORNIA_OPS = {
    "ShearX": ("shear_x", -0.3, 0.3),
    "ShearY": ("shear_y", -0.3, 0.3),
    "TranslateX": ("translate_x", -0.45, 0.45),
    "TranslateY": ("translate_y", -0.45, 0.45),
    "Rotate": ("rotate", -30.0, 30.0),
    "Brightness": ("brightness", 0.1, 1.9),
    "Color": ("color", 0.1, 1.9),
    "Contrast": ("contrast", 0.1, 1.9),
    "Sharpness": ("sharpness", 0.1, 1.9),
    "Posterize": ("posterize", 4.0, 8.0),
    "Solarize": ("solarize", 0.0, 1.0),
    "AutoContrast": ("auto_contrast", 0.0, 1.0),
    "Equalize": ("equalize", 0.0, 1.0),
    "Invert": ("invert", 0.0, 1.0),
    "SolarizeAdd": ("solarize_add", 0.0, 0.43),
}


@dataclass
class AugmentResult:
    name: str  # an operation, "RandAugment (...)" or "RandomErasing"
    sets: str  # the RandAugment operation sets that have it ("" for the others)
    sifa_ms: float  # per clip
    kornia_ms: float | None  # per clip, None where kornia has no counterpart or is absent
    kornia: str  # kornia's counterpart, "" if none


def kornia_version() -> str | None:
    """kornia's version, or None when it cannot be imported."""
    try:
        return importlib.import_module("kornia").__version__
    except ImportError:
        return None


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _mean_ms(run: Callable[[], object], calls: int) -> float:
    """Mean over ``calls`` seeded random draws (the drawn operations differ in cost)."""
    run()
    torch.manual_seed(0)
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls * 1e3


def benchmark_augment(
    frames: int = 16,
    size: int = 224,
    n: int = 2,
    m: float = 9.0,
    repeats: int = 5,
    threads: int = 1,
    kornia: bool = True,
) -> list[AugmentResult]:
    """Time every operation at magnitude ``m`` of 10, ``RandAugment(n, m)`` of both operation
    sets and ``RandomErasing(p=1)`` on a ``(frames, 3, size, size)`` clip with ``threads``
    torch threads; kornia's counterparts too if ``kornia`` and it is installed."""
    if frames < 1 or size < 3 or repeats < 1 or threads < 1 or n < 1:
        raise ValueError("frames, n, repeats and threads must be >= 1 and size >= 3")
    k = _kornia_modules(n, m) if kornia else None
    with using_threads(threads):
        clip = torch.rand(frames, 3, size, size, generator=torch.Generator().manual_seed(0))
        results = [_operation(name, clip, m, repeats, k) for name in _operation_names()]
        for ops in ("standard", "released"):
            augment = RandAugment(n, m, 10, ops)
            results.append(
                AugmentResult(
                    f"RandAugment n={n} m={m:g} ({ops})",
                    "",
                    _mean_ms(lambda a=augment: a(clip), 4 * repeats),
                    None if k is None else _mean_ms(lambda: k.rand_augment(clip), 4 * repeats),
                    "" if k is None else k.rand_augment_name,
                )
            )
        erasing = RandomErasing(p=1.0)
        results.append(
            AugmentResult(
                "RandomErasing p=1",
                "",
                _median_ms(lambda: erasing(clip), repeats),
                None if k is None else _median_ms(lambda: k.erasing(clip), repeats),
                "" if k is None else "RandomErasing(p=1)",
            )
        )
    return results


@dataclass
class _Kornia:
    ops: object  # kornia.augmentation.auto.rand_augment.ops
    rand_augment: Callable
    rand_augment_name: str
    erasing: Callable


def _operation_names() -> list[str]:
    return list(dict.fromkeys(STANDARD_OPS + RELEASED_OPS))


def _operation(
    name: str, clip: torch.Tensor, m: float, repeats: int, k: _Kornia | None
) -> AugmentResult:
    sets = [ops for ops, names in (("standard", STANDARD_OPS), ("released", RELEASED_OPS))
            if name in names]  # fmt: skip
    augment = RandAugment(1, m, 10, sets[0])
    torch.manual_seed(0)
    params = RandAugmentParams((augment.op_params(name, *clip.shape[-2:]),))
    sifa_ms = _median_ms(lambda: augment.apply(clip, params), repeats)
    kornia_ms, counterpart = None, ""
    if k is not None and name in KORNIA_OPS:
        factory, low, high = KORNIA_OPS[name]
        op = getattr(k.ops, factory)(low, high)
        kornia_ms = _median_ms(lambda: op(clip), repeats)
        counterpart = f"{type(op).__name__}({low:g}, {high:g})"
    return AugmentResult(name, ", ".join(sets), sifa_ms, kornia_ms, counterpart)


def _kornia_modules(n: int, m: float) -> _Kornia | None:
    try:
        augmentation = importlib.import_module("kornia.augmentation")
        auto = importlib.import_module("kornia.augmentation.auto")
        ops = importlib.import_module("kornia.augmentation.auto.rand_augment.ops")
    except ImportError:
        return None
    # kornia's m is a whole number strictly inside 0-30: 3 m of 30 is our m of 10.
    kornia_m = min(29, max(1, round(3 * m)))
    return _Kornia(
        ops=ops,
        rand_augment=auto.RandAugment(n=n, m=kornia_m),
        rand_augment_name=f"RandAugment(n={n}, m={kornia_m} of 30)",
        erasing=augmentation.RandomErasing(p=1.0, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3)),
    )


def format_augment(results: list[AugmentResult], setting: str, kornia_note: str = "") -> str:
    """A Markdown table: ms per clip of ours and kornia's counterpart, with the ratio
    (kornia / sifa: above 1 where ours is faster)."""
    lines = [
        setting,
        "",
        "| operation | sets | sifa ms/clip | kornia ms/clip | kornia / sifa | kornia op |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        kornia = "—" if r.kornia_ms is None else f"{r.kornia_ms:.2f}"
        ratio = "—" if r.kornia_ms is None else f"{r.kornia_ms / r.sifa_ms:.2f}x"
        lines.append(
            f"| {r.name} | {r.sets} | {r.sifa_ms:.2f} | {kornia} | {ratio} | {r.kornia or '—'} |"
        )
    if kornia_note:
        lines += ["", kornia_note]
    return "\n".join(lines)
