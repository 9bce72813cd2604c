"""Loader helpers: resumable shuffling and worker set-up."""

from __future__ import annotations

import signal

from sifa.data.loader import ResumableSampler, seed_worker


def test_resumable_sampler_continues_the_same_order():
    sampler = ResumableSampler(range(20), num_replicas=1, rank=0, shuffle=True, seed=4)
    sampler.set_epoch(3)
    full = list(sampler)
    assert sorted(full) == list(range(20)) and full != list(range(20))
    sampler.set_start(7)
    assert list(sampler) == full[7:] and len(sampler) == 13
    sampler.set_epoch(4)  # a new epoch starts from its beginning, in a new order
    assert len(sampler) == 20 and list(sampler) != full


def test_resumable_sampler_shards_between_processes():
    ranks = [ResumableSampler(range(10), num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    assert [list(s) for s in ranks] == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_workers_leave_ctrl_c_to_the_main_process_and_die_on_sigterm():
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, lambda *_: None)  # as the sifa command installs one
        seed_worker(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
