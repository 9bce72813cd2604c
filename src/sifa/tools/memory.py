"""Resident memory of this process (Linux ``/proc``), for the benchmarks' peak measurements."""

from __future__ import annotations

import os


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


def peak_mib() -> float:
    """Peak resident memory since the process started or :func:`reset_peak`."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")
