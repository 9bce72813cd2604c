"""Learning-rate schedule: linear warm-up then cosine decay, stepped once per update."""

from __future__ import annotations

import math


class WarmupCosine:
    """Multiplier of the base learning rate at update ``step`` (for ``LambdaLR``).

    Rises linearly from ``start_factor`` to 1 over ``warmup`` updates, then follows a cosine
    from 1 down to ``min_factor`` at update ``total``, and stays there. A callable object rather
    than a closure, so the scheduler's state dict records it.
    """

    def __init__(
        self, total: int, warmup: int, start_factor: float = 0.01, min_factor: float = 0.0
    ):
        if total < 1 or not 0 <= warmup <= total:
            raise ValueError(f"need 0 <= warmup ({warmup}) <= total ({total}) and total >= 1")
        self.total = total
        self.warmup = warmup
        self.start_factor = start_factor
        self.min_factor = min_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start_factor + (1 - self.start_factor) * step / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
