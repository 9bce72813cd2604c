"""The operator backends the tests run on: every backend, skipped with the reason where it
cannot run on this machine (tests/ops/test_backends.py checks that the fused CPU kernel does
build wherever a compiler is present, so a broken build fails instead of skipping)."""

from __future__ import annotations

import pytest


def backend_params() -> list:
    from sifa.ops import backend_report

    return [
        pytest.param(
            row["backend"],
            marks=pytest.mark.skipif(
                not row["available"], reason=f"backend {row['backend']}: {row['reason']}"
            ),
        )
        for row in backend_report()
    ]


def require_cpu_kernel() -> None:
    """Skip the calling test where the fused CPU kernel cannot be built (saying why)."""
    from sifa.ops import cpu

    if cpu.load() is None:
        pytest.skip(f"the fused CPU kernel cannot be built here: {cpu.failure()}")
