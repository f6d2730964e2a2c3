"""How OpenMP threads wait, decided before PyTorch starts them (this module must not import torch)."""

from __future__ import annotations

import os


def openmp_wait_setup() -> None:
    """Before torch starts OpenMP: how its idle threads wait for the next parallel op.

    On an idle machine a short spin is faster than sleeping at once; while another process keeps
    a core busy it is slower, and OpenMP's default long spin much slower (README, Performance).
    So: a short spin only when the load average says the machine is idle, else sleep at once.
    Settings already in the environment win.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    try:
        idle = os.getloadavg()[0] < 0.5
    except OSError:  # no load average on this platform
        idle = False
    if idle:
        os.environ["GOMP_SPINCOUNT"] = "3000"  # GNU OpenMP (torch's Linux builds): spins, then sleeps
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
