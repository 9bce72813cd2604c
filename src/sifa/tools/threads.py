"""torch's CPU thread count set for a while, for the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def using_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` inside the block (``None``: left alone), the
    previous count restored after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
