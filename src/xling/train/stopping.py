"""Ctrl-C and SIGTERM while training: the step in progress ends, a checkpoint is written, then the run stops.

A resume then goes on from the step where it stopped. (Before, a stop lost everything since the last periodic
checkpoint: up to `train.checkpoint_every` steps, which at the paper's presets is a thousand steps; SLURM's time
limit sends SIGTERM and kills 30 s later.) A second signal stops at once, as the first used to, unless it comes
within a second of the first: one stop often arrives twice (`timeout -s INT` signals the process and its group; a
terminal's Ctrl-C reaches a study's workers, and their runner passes it on).

Only signals that Python turns into an exception are held back: Ctrl-C, and SIGTERM where a handler of its own
raises one (`xling`'s commands, a study's workers). The signal's own handler is called at the step's end, so
whatever it does (a study worker's bookkeeping, say) still happens.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

SAME_STOP_WITHIN = 1.0  # seconds: a repeat this soon is the first stop arriving by another way


class StepEndStop:
    """A stop asked for while a step ran: `requested` once a signal came, `deliver` hands it to its handler."""

    def __init__(self) -> None:
        self.handlers: dict[int, object] = {}  # the handlers held back, by signal number
        self.pending: int | None = None  # the signal that came, held back until the step's end
        self.since = 0.0  # when it came (time.monotonic)

    @property
    def requested(self) -> bool:
        return self.pending is not None

    def _note(self, signum, frame) -> None:
        if self.pending is None:
            self.pending, self.since = signum, time.monotonic()
        elif time.monotonic() - self.since >= SAME_STOP_WITHIN:  # a second stop: now (from inside the step, as before)
            self.handlers[signum](signum, frame)

    def deliver(self) -> None:
        """Call the held-back signal's handler (it raises KeyboardInterrupt, or lets training go on)."""
        signum, self.pending = self.pending, None
        if signum is not None:
            self.handlers[signum](signum, None)


@contextlib.contextmanager
def stop_at_step_end(enabled: bool = True) -> Iterator[StepEndStop]:
    """Hold back Ctrl-C and SIGTERM meanwhile (see the module's docstring); `enabled` False, or outside the main
    thread (where Python runs no signal handler), a stop that never asks."""
    stop = StepEndStop()
    if enabled and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(signum)
            if callable(handler):  # (SIG_DFL and SIG_IGN are not: the process dies, or ignores it, as before)
                stop.handlers[signum] = handler
    for signum in stop.handlers:
        signal.signal(signum, stop._note)
    try:
        yield stop
    finally:
        for signum, handler in stop.handlers.items():
            signal.signal(signum, handler)
