"""Session set-up shared by every test folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def cpu_kernel_built():
    """Build (or load) the fused CPU kernel once, first: later tests start subprocesses, and
    one killed while it builds would leave the extension's build lock behind."""
    from sifa.ops import cpu

    cpu.load()
