"""The study runner's worker processes (local spawn pools and Ray tasks).

This module must not import torch at its top: a worker's OpenMP settings only count when they
are in its environment before torch, and the OpenMP runtime with it, is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

from ..errors import warnings_to_stderr
from ..train.stopping import FORWARDED, HELD_WHILE_STARTING, stops_training
from .placement import GPU_VARIABLE

# Ctrl-C in a terminal reaches every process of its group: the runner and each worker at once.
_interrupted = False  # this worker has had a Ctrl-C: start nothing more
_busy = False  # a run (or an analysis) is executing in this worker
_stop = None  # the pool's multiprocessing Event: set by the runner when it stops early
_terminated = False  # this worker has had a SIGTERM: it ends once its run has stopped
_RUNNER_STOPS_WITHIN = 2.0  # seconds: a runner signalled with its workers sets `_stop` at once


@stops_training
def _on_interrupt(signum, frame) -> None:
    """Ctrl-C in a pool worker: the run executing here stops (on the first one only: a second must not
    break the checkpoint the first is saving) and no queued run starts here; an idle worker just waits
    to be shut down (by default it would die with a traceback from the pool's queue)."""
    global _interrupted
    first, _interrupted = not _interrupted, True
    if _busy and first:
        raise KeyboardInterrupt


def _on_terminate(signum, frame) -> None:
    """SIGTERM in a pool worker (`timeout` and a SLURM time limit signal every process of the job; the pool
    terminates its workers when one has died): the executing run stops as after Ctrl-C, so its run.json says
    interrupted, not running, and the worker then ends (`guarded`: by its pool's shutdown, when the runner stops
    too); an idle worker ends at once."""
    global _terminated
    _terminated = True
    if not _busy:
        _end_by_sigterm()
    _on_interrupt(signum, frame)


def _end_by_sigterm() -> None:
    """End this process as SIGTERM would have (a pool that terminates its workers waits for them to end: one that
    went back to waiting for tasks would keep it waiting for ever)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def init_pool_worker(threads: int, gpu_places, stop) -> None:
    """A local pool's worker: `init_worker`, plus Ctrl-C and SIGTERM handled as `_on_interrupt` and
    `_on_terminate` say and `stop` (a multiprocessing Event) checked before each task (`guarded`)."""
    global _stop
    _stop = stop
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a runner that ignores Ctrl-C: so do its workers
        signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(FORWARDED, _on_interrupt)  # Ctrl-C passed on by the runner (launch._interrupt)
    signal.signal(signal.SIGTERM, _on_terminate)
    if hasattr(signal, "pthread_sigmask"):  # the runner started this process with these held back (Launch.run_each)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_WHILE_STARTING)
    init_worker(threads, gpu_places)


def guarded(fn, *args):
    """fn(*args) in a pool worker, unless the runner has stopped or Ctrl-C has reached this worker:
    then None, at once (a run queued in the pool must not start after Ctrl-C)."""
    global _busy
    _busy = True  # first: a Ctrl-C from here on stops fn, or keeps it from starting
    if _interrupted or (_stop is not None and _stop.is_set()):
        _busy = False
        return None
    try:
        return fn(*args)
    finally:
        _busy = False
        # A runner that stops too (signalled with its workers) shuts its pool down in order; otherwise end here
        if _terminated and not (_stop is not None and _stop.wait(_RUNNER_STOPS_WITHIN)):
            _end_by_sigterm()


def init_worker(threads: int, gpu_places=None) -> None:
    """Each worker process: its share of the cores, its GPU, death with its parent (Linux), warnings shown.

    gpu_places: a multiprocessing queue of CUDA_VISIBLE_DEVICES values (`placement.plan_gpus`),
    one taken by each worker as it starts; the worker then sees only that GPU, as cuda:0.
    """
    if gpu_places is not None:
        set_gpu(gpu_places.get(timeout=60))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # The wait policy `xling` chose from the machine's load (threads.openmp_wait_setup) is inherited;
    # without one (called from Python), sleep at once: workers share the machine.
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    with contextlib.suppress(Exception):  # so a kill -9 of the runner does not leave workers training
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    warnings_to_stderr()
    import torch  # only now: see the module docstring

    torch.set_num_threads(threads)


def set_gpu(gpu: str | None) -> None:
    """This process trains on `gpu` only (set before CUDA starts); study.json records it. None: no GPU given."""
    if gpu is None:
        os.environ.pop(GPU_VARIABLE, None)
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ[GPU_VARIABLE] = gpu


def ray_task(spec_json: dict, root: str, threads: int, on_gpu: bool = False, loggers: tuple[str, ...] = (),
             workdir: str | None = None, then: tuple = ()) -> dict:
    """One run as a Ray task, in a worker set up like a local one (Ray has set its CUDA_VISIBLE_DEVICES), in the
    driver's directory `workdir` (a cluster's worker starts where `ray start` ran: relative paths, and the run's
    recorded workdir, are the driver's)."""
    if workdir and os.getcwd() != workdir:
        try:
            os.chdir(workdir)
        except OSError:  # this run fails, as execute_run's do (other nodes may have it)
            return {"id": spec_json["id"], "status": "failed", "seconds": 0.0, "gpu": None,
                    "error": f"the study's directory {workdir} is not on Ray node {os.uname().nodename}: run `xling "
                             "study run` from a directory every node shares (as ROOT must be)"}
    set_gpu(os.environ.get("CUDA_VISIBLE_DEVICES", "") if on_gpu else None)  # Ray reuses CPU workers
    init_worker(threads)
    from .execute import execute_run  # imports torch: after init_worker

    return execute_run(spec_json, root, loggers=loggers, then=then)
