"""Which implementation runs the SIFA operator.

Backends: ``"reference"`` (pure PyTorch, any device and dtype: the oracle), ``"cpu"`` (the
fused C++ kernel of :mod:`sifa.ops.cpu`, CPU tensors) and ``"triton"`` (the fused Triton
kernels of :mod:`sifa.ops.triton`, CUDA tensors; CPU tensors under ``TRITON_INTERPRET=1``).
The choice, per call:

1. the operator's ``backend=`` argument, unless it is ``"auto"``;
2. else the ``SIFA_BACKEND`` environment variable, unless unset or ``"auto"``;
3. else automatic: ``"cpu"`` for CPU tensors when the kernel builds here, ``"triton"`` for
   CUDA tensors when Triton imports, otherwise ``"reference"``. A fast backend that cannot
   run is reported once, with the reason.

A backend asked for by name that cannot run raises an error that says why.
:func:`backend_report` (``sifa backends``) lists every backend and its state.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

import torch

from sifa.ops import cpu, reference
from sifa.ops import triton as triton_backend

BACKENDS = ("reference", "cpu", "triton")
CHOICES = ("auto", *BACKENDS)
ENV = "SIFA_BACKEND"
# The fused backend the automatic choice prefers per device type, and how a warning names it.
_FAST = {"cpu": ("cpu", "fused CPU kernel"), "cuda": ("triton", "Triton GPU kernel")}

_warned: set[str] = set()


class BackendUnavailableError(RuntimeError):
    """A backend asked for by name cannot run here; the message says why."""


def check_backend(name: str, source: str = "backend") -> None:
    if name not in CHOICES:
        raise ValueError(f"{source} must be one of {CHOICES}, got {name!r}")


def requested_backend(backend: str = "auto") -> str:
    """The backend asked for: the argument, else ``$SIFA_BACKEND``, else ``"auto"``."""
    check_backend(backend)
    if backend != "auto":
        return backend
    from_env = os.environ.get(ENV, "").strip() or "auto"
    check_backend(from_env, f"the environment variable {ENV}")
    return from_env


def _cpu_reason(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"it runs on CPU tensors, these are on {device.type}"
    if cpu.load() is None:
        return cpu.failure()
    return None


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device`` (``None``: it can). Builds the CPU kernel
    if asked about it and it is not built yet."""
    if name == "reference":
        return None
    if name == "cpu":
        return _cpu_reason(device)
    return triton_backend.unavailable_reason(device)


def select_backend(device: torch.device, backend: str = "auto") -> str:
    """The backend that runs a call on ``device`` (see the module docstring)."""
    name = requested_backend(backend)
    if name != "auto":
        reason = unavailable_reason(name, device)
        if reason is not None:
            raise BackendUnavailableError(f"SIFA backend {name!r} cannot run: {reason}")
        return name
    if device.type not in _FAST:
        return "reference"
    fast, description = _FAST[device.type]
    reason = unavailable_reason(fast, device)
    if reason is None:
        return fast
    if fast not in _warned:
        _warned.add(fast)
        warnings.warn(
            f"sifa: the {description} is unavailable ({reason}); the operator runs on the "
            "slower reference backend",
            RuntimeWarning,
            stacklevel=3,
        )
    return "reference"


def implementation(name: str) -> ModuleType:
    """The module with ``forward`` and ``backward`` of backend ``name``."""
    return {"reference": reference, "cpu": cpu, "triton": triton_backend}[name]


def backend_report() -> list[dict]:
    """Every backend with the devices it serves here, ``available`` and, when not, ``reason``
    (builds the CPU kernel if it is not built yet, to find out)."""
    cpu_reason = _cpu_reason(torch.device("cpu"))
    if torch.cuda.is_available():
        triton_devices, triton_reason = "cuda", unavailable_reason("triton", torch.device("cuda"))
    elif os.environ.get(triton_backend.INTERPRET_ENV) == "1":
        triton_devices = "cpu (Triton interpreter)"
        triton_reason = unavailable_reason("triton", torch.device("cpu"))
    else:
        triton_devices = "cuda"
        triton_reason = "no CUDA device here" + (
            f"; {triton_backend.failure()}" if triton_backend.failure() else ""
        )
    return [
        {"backend": "reference", "devices": "any", "available": True, "reason": None},
        {"backend": "cpu", "devices": "cpu", "available": cpu_reason is None, "reason": cpu_reason},
        {
            "backend": "triton",
            "devices": triton_devices,
            "available": triton_reason is None,
            "reason": triton_reason,
        },
    ]
