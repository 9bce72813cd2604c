"""Batching the clips of several requests into one model call.

One thread owns the model. Callers hand it groups of views (a clip's test views, or a window's)
and wait for each group's average class probabilities. The thread takes the oldest waiting
group, then keeps adding groups, of any caller, while the batch stays within ``max_batch``
views, no more than ``max_wait_s`` has passed since the first one arrived, and ``more_coming()``
says that other callers are still preparing views: under load the model sees fuller batches,
and a request alone is scored at once. A group is never
split across calls, so ``max_batch=1`` scores every group alone, exactly as ``sifa predict`` does.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch


@dataclass
class _Group:
    views: torch.Tensor
    future: Future = field(default_factory=Future)


@dataclass
class _Task:
    """Work that needs the model alone (the offsets picture hooks into its layers)."""

    run: Callable[[], object]
    future: Future = field(default_factory=Future)


_STOP = object()  # put by close(): what came before it is scored, then the thread ends


class BatcherClosed(RuntimeError):
    """The batcher was closed: the server is shutting down."""


class ClipBatcher:
    """Scores groups of views with ``score`` (views ``(N, C, T, H, W)`` -> class probabilities
    ``(N, classes)``) on one thread, several callers' groups in one call (see the module)."""

    def __init__(
        self,
        score: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.005,
        more_coming: Callable[[], bool] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        self._score = score
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._more_coming = more_coming or (lambda: True)
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        # What was scored: calls and views, to see how full the batches were.
        self.calls = 0
        self.views = 0
        self._thread = threading.Thread(target=self._serve, name="sifa-batcher", daemon=True)
        self._thread.start()

    def score_groups(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """The average class probabilities of each group (blocks until they are scored); the
        same contract as :meth:`sifa.engine.predict.Predictor.score_groups`."""
        pending = self._put(*(_Group(views) for views in groups))
        return [group.future.result() for group in pending]

    def run_alone(self, task: Callable[[], object]) -> object:
        """Run ``task`` on the model's thread between batches, and return what it returns."""
        (queued,) = self._put(_Task(task))
        return queued.future.result()

    def close(self) -> None:
        """Score what is waiting, then stop the thread; later calls raise
        :class:`BatcherClosed`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._waiting.put(_STOP)
        self._thread.join()

    def _put(self, *items):
        """Queue ``items`` together: a close comes before or after all of them."""
        with self._lock:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            for item in items:
                self._waiting.put(item)
        return items

    def _serve(self) -> None:
        carried = None  # an item taken from the queue that did not fit the last batch
        while True:
            item = carried if carried is not None else self._waiting.get()
            carried = None
            if item is _STOP:
                return
            if isinstance(item, _Task):
                _settle(item.future, item.run)
                continue
            batch = [item]
            size = len(item.views)
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                if self._waiting.empty() and not self._more_coming():
                    break  # nobody else is about to send views: waiting would only delay
                try:
                    following = self._waiting.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if following is _STOP or isinstance(following, _Task):
                    carried = following
                    break
                if size + len(following.views) > self.max_batch:
                    carried = following
                    break
                batch.append(following)
                size += len(following.views)
            self._score_batch(batch)

    def _score_batch(self, batch: list[_Group]) -> None:
        try:
            views = batch[0].views if len(batch) == 1 else torch.cat([g.views for g in batch])
            probabilities = self._score(views)
        except Exception as error:  # every caller of the batch learns why
            for group in batch:
                group.future.set_exception(error)
            return
        self.calls += 1
        self.views += len(views)
        for group, part in zip(batch, probabilities.split([len(g.views) for g in batch]),
                               strict=True):  # fmt: skip
            group.future.set_result(part.mean(0))


def _settle(future: Future, run: Callable[[], object]) -> None:
    try:
        future.set_result(run())
    except Exception as error:
        future.set_exception(error)
