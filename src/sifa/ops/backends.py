"""Which implementation runs the SIFA operator.

Backends: ``"reference"`` (pure PyTorch, any device and dtype: the oracle) and ``"cpu"`` (the
fused C++ kernel of :mod:`sifa.ops.cpu`, CPU tensors). The choice, per call:

1. the operator's ``backend=`` argument, unless it is ``"auto"``;
2. else the ``SIFA_BACKEND`` environment variable, unless unset or ``"auto"``;
3. else automatic: ``"cpu"`` for CPU tensors when the kernel builds here, otherwise
   ``"reference"``. A kernel that cannot be built is reported once, with the reason.

A backend asked for by name that cannot run raises an error that says why.
:func:`backend_report` (``sifa backends``) lists every backend and its state.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

import torch

from sifa.ops import cpu, reference

BACKENDS = ("reference", "cpu")
CHOICES = ("auto", *BACKENDS)
ENV = "SIFA_BACKEND"

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
    """Why the fused CPU kernel cannot run on ``device`` (``None``: it can)."""
    if device.type != "cpu":
        return f"it runs on CPU tensors, these are on {device.type}"
    if cpu.load() is None:
        return cpu.failure()
    return None


def select_backend(device: torch.device, backend: str = "auto") -> str:
    """The backend that runs a call on ``device`` (see the module docstring)."""
    name = requested_backend(backend)
    if name == "reference":
        return name
    if name == "cpu":
        reason = _cpu_reason(device)
        if reason is not None:
            raise BackendUnavailableError(f"SIFA backend 'cpu' cannot run: {reason}")
        return name
    if device.type == "cpu":
        reason = _cpu_reason(device)
        if reason is None:
            return "cpu"
        if "cpu" not in _warned:
            _warned.add("cpu")
            warnings.warn(
                f"sifa: the fused CPU kernel is unavailable ({reason}); the operator runs on the "
                "slower reference backend",
                RuntimeWarning,
                stacklevel=3,
            )
    return "reference"


def implementation(name: str) -> ModuleType:
    """The module with ``forward`` and ``backward`` of backend ``name``."""
    return {"reference": reference, "cpu": cpu}[name]


def backend_report() -> list[dict]:
    """Every backend with ``available`` and, when not, ``reason`` (builds the CPU kernel if it
    is not built yet, to find out)."""
    reason = _cpu_reason(torch.device("cpu"))
    return [
        {"backend": "reference", "devices": "any", "available": True, "reason": None},
        {"backend": "cpu", "devices": "cpu", "available": reason is None, "reason": reason},
    ]
