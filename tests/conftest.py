"""Session set-up shared by every test folder."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton backend's tests run its kernels in Triton's interpreter on CPU
# tensors; the variable must be set before the kernels are first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session", autouse=True)
def cpu_kernel_built():
    """Build (or load) the fused CPU kernel once, first: later tests start subprocesses, and
    one killed while it builds would leave the extension's build lock behind."""
    from sifa.ops import cpu

    cpu.load()
