"""What a process uses of the machine: its resident memory (Linux ``/proc``), for the
benchmarks' and the training dry run's measurements, and torch's CPU thread count set for a
while, for the benchmarks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def rss_mib() -> float:
    """Resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Restart the peak counter (``VmHWM``): a spawned process otherwise starts with its
    parent's peak. False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_mib(pid: int | str = "self") -> float:
    """Peak resident memory of this process (or process ``pid``) since it started or
    :func:`reset_peak`."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no VmHWM in /proc/{pid}/status")


def child_pids() -> list[int]:
    """The processes this process started that are still running (DataLoader workers...)."""
    me, children = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # pid (command) state ppid ...: the command may hold spaces and parentheses
                fields = stat.read().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == me:
            children.append(int(entry.name))
    return children


def private_mib(pid: int | str = "self") -> float:
    """Resident memory now that process ``pid`` shares with no other process (its unique set:
    not the pages a forked process still shares with its parent)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as smaps:
        for line in smaps:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


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
