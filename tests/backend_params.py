"""The operator backends the tests run on: every backend, skipped with the reason where it
cannot run on this machine (tests/ops/test_backends.py checks that the fused CPU kernel does
build wherever a compiler is present, so a broken build fails instead of skipping)."""

from __future__ import annotations

import pytest


def backend_params() -> list:
    """Every backend, for tests on CPU tensors (Triton's through its interpreter)."""
    import torch

    from sifa.ops.backends import BACKENDS, unavailable_reason

    params = []
    for name in BACKENDS:
        reason = unavailable_reason(name, torch.device("cpu"))
        mark = pytest.mark.skipif(reason is not None, reason=f"backend {name}: {reason}")
        params.append(pytest.param(name, marks=mark))
    return params


def require_cpu_kernel() -> None:
    """Skip the calling test where the fused CPU kernel cannot be built (saying why)."""
    from sifa.ops import cpu

    if cpu.load() is None:
        pytest.skip(f"the fused CPU kernel cannot be built here: {cpu.failure()}")
