"""The batcher: groups of several callers in one model call, never split, errors to every
caller of the batch, work that needs the model alone, a close that scores what waits."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from sifa.serve.batching import BatcherClosed, ClipBatcher

CLASSES = 3


class RecordingScore:
    """A stand-in model: each view's probabilities are a known function of its value, and
    the sizes of the batches it was called with are recorded. ``gate`` holds every call until
    it is set."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.gate = gate

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            self.gate.wait(timeout=30)
        self.batches.append(len(views))
        self.threads.add(threading.current_thread().name)
        return expected_probabilities(views)


def expected_probabilities(views: torch.Tensor) -> torch.Tensor:
    values = views.flatten(1)[:, :1]  # (N, 1): each view's first value
    return torch.cat([values, 2 * values, 3 * values], dim=1)


def group(value: float, views: int) -> torch.Tensor:
    return torch.full((views, 2, 1, 1, 1), value)


def test_groups_of_several_callers_share_one_call_once_the_batch_is_full():
    score = RecordingScore()
    # A long wait: only a full batch (4 views) can end it early, so this is one call.
    batcher = ClipBatcher(score, max_batch=4, max_wait_s=30)
    with ThreadPoolExecutor(4) as callers:
        results = list(
            callers.map(lambda v: batcher.score_groups([group(v, 1)])[0], [1.0, 2.0, 3.0, 4.0])
        )
    batcher.close()
    assert score.batches == [4]
    for value, result in zip([1.0, 2.0, 3.0, 4.0], results, strict=True):
        torch.testing.assert_close(result, torch.tensor([value, 2 * value, 3 * value]))


def test_a_group_is_never_split_and_a_larger_one_is_scored_alone():
    score = RecordingScore()
    batcher = ClipBatcher(score, max_batch=4, max_wait_s=0)
    big, small = group(1.0, 6), group(2.0, 3)
    results = batcher.score_groups([big, small])
    batcher.close()
    assert score.batches == [6, 3]  # 6 + 3 > 4: two calls, neither split
    torch.testing.assert_close(results[0], expected_probabilities(big).mean(0))
    torch.testing.assert_close(results[1], expected_probabilities(small).mean(0))


def test_a_group_that_does_not_fit_waits_for_the_next_call():
    score = RecordingScore()
    batcher = ClipBatcher(score, max_batch=4, max_wait_s=0.2)
    groups = [group(1.0, 4), group(2.0, 3), group(3.0, 2)]
    results = batcher.score_groups(groups)
    batcher.close()
    # 4 fills a batch; 3 + 2 would overfill one: the 2 goes on into the next call.
    assert score.batches == [4, 3, 2]
    for views, result in zip(groups, results, strict=True):
        torch.testing.assert_close(result, expected_probabilities(views).mean(0))


def test_a_batch_waits_only_while_more_views_are_coming():
    score = RecordingScore()
    coming = threading.Event()
    coming.set()
    # max_batch 2: the second group fills the batch, so it is scored as soon as it joins (with
    # room left it would wait out max_wait_s, as more views are coming)
    batcher = ClipBatcher(score, max_batch=2, max_wait_s=30, more_coming=coming.is_set)
    with ThreadPoolExecutor(1) as caller:
        first = caller.submit(batcher.score_groups, [group(1.0, 1)])
        batcher.score_groups([group(2.0, 1)])  # joins the first, which waits for it
        first.result(timeout=30)
        assert score.batches == [2]
        coming.clear()  # nobody else prepares views: a lone group is scored at once
        alone = caller.submit(batcher.score_groups, [group(3.0, 1)])
        alone.result(timeout=10)  # well before the 30 s a waiting batch would take
    batcher.close()
    assert score.batches == [2, 1]


def test_an_error_reaches_every_caller_of_the_batch_and_the_batcher_goes_on():
    calls = []

    def failing_once(views: torch.Tensor) -> torch.Tensor:
        calls.append(len(views))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return expected_probabilities(views)

    batcher = ClipBatcher(failing_once, max_batch=2, max_wait_s=30)
    with ThreadPoolExecutor(2) as callers:
        failed = [callers.submit(batcher.score_groups, [group(v, 1)]) for v in (1.0, 2.0)]
        for future in failed:
            with pytest.raises(RuntimeError, match="out of memory"):
                future.result(timeout=30)
    (result,) = batcher.score_groups([group(5.0, 2)])
    batcher.close()
    torch.testing.assert_close(result, torch.tensor([5.0, 10.0, 15.0]))
    assert calls == [2, 2]


def test_work_that_needs_the_model_alone_runs_on_the_batchers_thread_between_batches():
    score = RecordingScore()
    batcher = ClipBatcher(score, max_batch=2, max_wait_s=0)
    batcher.score_groups([group(1.0, 1)])
    thread = batcher.run_alone(lambda: threading.current_thread().name)
    with pytest.raises(ValueError, match="no SIFA stage"):
        batcher.run_alone(lambda: (_ for _ in ()).throw(ValueError("no SIFA stage")))
    batcher.close()
    assert {thread} == score.threads == {"sifa-batcher"}


def test_close_scores_what_waits_then_refuses_more():
    entered, gate = threading.Event(), threading.Event()

    def held(views: torch.Tensor) -> torch.Tensor:
        entered.set()
        gate.wait(timeout=30)
        return expected_probabilities(views)

    batcher = ClipBatcher(held, max_batch=1, max_wait_s=0)
    with ThreadPoolExecutor(1) as caller:
        # Three groups queued together; the first is being scored when close() is called.
        pending = caller.submit(batcher.score_groups, [group(v, 1) for v in (1.0, 2.0, 3.0)])
        assert entered.wait(timeout=30)
        closing = threading.Thread(target=batcher.close)
        closing.start()
        gate.set()
        closing.join(timeout=30)
        values = [float(result[0]) for result in pending.result(timeout=30)]
    assert values == [1.0, 2.0, 3.0]
    with pytest.raises(BatcherClosed):
        batcher.score_groups([group(1.0, 1)])


@pytest.mark.parametrize(("max_batch", "max_wait_s"), [(0, 0.0), (2, -1.0)])
def test_bad_settings_are_refused(max_batch, max_wait_s):
    with pytest.raises(ValueError, match=r"max_batch|max_wait_s"):
        ClipBatcher(RecordingScore(), max_batch=max_batch, max_wait_s=max_wait_s)
