"""How OpenMP threads wait, decided before PyTorch starts them (this module must not import torch)."""

from __future__ import annotations

import os
import time

# How long `busy_cores` watches the machine: 20 ticks of /proc/stat (10 ms each) on 2 cores.
BUSY_WINDOW_S = 0.1


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU time of all cores since boot, in ticks (Linux /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def busy_cores(window: float = BUSY_WINDOW_S) -> float | None:
    """How many cores other processes keep busy right now: the machine's busy CPU time over a
    short window while this process sleeps (None where /proc/stat is not there).

    Unlike the 1-minute load average, this does not still count a job that ended seconds ago."""
    try:
        busy0, total0 = cpu_ticks()
        time.sleep(window)
        busy1, total1 = cpu_ticks()
    except (OSError, ValueError):
        return None
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def openmp_wait_setup() -> None:
    """Before torch starts OpenMP: how its idle threads wait for the next parallel op.

    On an idle machine a short spin is faster than sleeping at once; while another process keeps
    a core busy it is slower, and OpenMP's default long spin much slower (README, Performance).
    So: a short spin only when the machine is idle now (`busy_cores` below half a core; the load
    average where that cannot be measured), else sleep at once. Settings already in the
    environment win.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    busy = busy_cores()
    try:
        idle = (busy if busy is not None else os.getloadavg()[0]) < 0.5
    except OSError:  # no load average on this platform
        idle = False
    if idle:
        os.environ["GOMP_SPINCOUNT"] = "3000"  # GNU OpenMP (torch's Linux builds): spins, then sleeps
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
