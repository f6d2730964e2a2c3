"""Ctrl-C and SIGTERM while training: the step in progress ends, a checkpoint is written, then the run stops.

A resume then goes on from the step where it stopped. (Before, a stop lost everything since the last periodic
checkpoint: up to `train.checkpoint_every` steps, which at the paper's presets is a thousand steps; SLURM's time
limit sends SIGTERM and kills 30 s later.) A second signal stops at once, as the first used to, unless it comes
within a second of the first or is a study runner passing a stop on (FORWARDED): one stop often arrives twice
(`timeout -s INT` signals the process and its group; a terminal's Ctrl-C, or SLURM, reaches a study's workers and
their runner, which passes it on).

Signals whose handler is Python code are held back: Ctrl-C, SIGTERM where `xling`'s commands and a study's workers
turn it into Ctrl-C (or a handler of your own), and FORWARDED where a study's worker set it (`stops_training`).
SIG_DFL and SIG_IGN are left as they are (a SIGTERM to a Python script that set nothing still kills it at once). The
held signal's own handler is called at the step's end, so whatever it does (raise KeyboardInterrupt, a study worker's
bookkeeping) still happens.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator

from ..errors import output_gone

log = logging.getLogger(__name__)

SAME_STOP_WITHIN = 1.0  # seconds: a repeat this soon is the first stop arriving by another way
FORWARDED = signal.SIGUSR1  # a study runner passes a stop on to its workers with this one: never a second press
# blocked while a study's worker process starts, until it has its handlers (study.launch, study.workers)
HELD_WHILE_STARTING = frozenset({signal.SIGINT, FORWARDED})


def is_stop(exc: BaseException) -> bool:
    """Whether `exc` stops a run rather than fails it (run.json and study.json say interrupted; a resume goes on): Ctrl-C,
    SIGTERM where it is raised as Ctrl-C, and the reader of the output gone (`xling ... | head`: where a command of the
    shell would die of SIGPIPE, Python raises BrokenPipeError at the next line written). A broken pipe of anything else
    (a logger's connection) is a failure."""
    return isinstance(exc, (KeyboardInterrupt, SystemExit)) or (isinstance(exc, BrokenPipeError) and output_gone())


def stops_training(handler):
    """Mark `handler` (a study worker's, for FORWARDED) as one that stops a run: held back to the step's end. A
    FORWARDED handler of your own (progress, a requeue) is left alone."""
    handler.stops_training = True
    return handler


class StepEndStop:
    """A stop asked for while a step ran: `requested` once a signal came, `deliver` hands it to its handler."""

    def __init__(self, at: str = "at the end of this step") -> None:
        self.at = at  # when the stop comes, as its warning says
        self.handlers: dict[int, object] = {}  # the handlers held back, by signal number
        self.pending: int | None = None  # the signal that came, held back until the step's end
        self.since = 0.0  # when it came (time.monotonic)

    @property
    def requested(self) -> bool:
        return self.pending is not None

    def _note(self, signum, frame) -> None:
        if self.pending is None:
            self.pending, self.since = signum, time.monotonic()
            what = {signal.SIGINT: "Ctrl-C", FORWARDED: "the study stops"}.get(signum, signal.Signals(signum).name)
            log.warning(f"{what}: stopping {self.at}, after its checkpoint (a Ctrl-C a second from now stops at "
                        "once, without one)")
        elif signum != FORWARDED and time.monotonic() - self.since >= SAME_STOP_WITHIN:
            self.handlers[signum](signum, frame)  # a second stop: now, from inside the step, as before

    def deliver(self) -> None:
        """Call the held-back signal's handler (it raises KeyboardInterrupt, or lets training go on)."""
        signum, self.pending = self.pending, None
        if signum is not None:
            self.handlers[signum](signum, None)


@contextlib.contextmanager
def stop_at_step_end(enabled: bool = True, at: str = "at the end of this step") -> Iterator[StepEndStop]:
    """Hold back Ctrl-C and SIGTERM meanwhile (see the module's docstring) until the caller's `deliver`; a stop still
    held when the block ends is delivered then. `enabled` False, or outside the main thread (where Python runs no
    signal handler): a stop that never asks."""
    stop = StepEndStop(at)
    if enabled and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, FORWARDED):
            handler = signal.getsignal(signum)
            if callable(handler) and (signum != FORWARDED or getattr(handler, "stops_training", False)):
                stop.handlers[signum] = handler
    for signum in stop.handlers:
        signal.signal(signum, stop._note)
    try:
        yield stop
    except BaseException:
        if stop.requested:  # the block failed meanwhile: its error goes on, the stop still reaches its handler
            with contextlib.suppress(KeyboardInterrupt, SystemExit):
                stop.deliver()
        raise
    finally:
        for signum, handler in stop.handlers.items():
            signal.signal(signum, handler)
    stop.deliver()
