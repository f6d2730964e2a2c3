"""Executing one run of a study: train (or resume) and evaluate it under its lock, recording the outcome."""

from __future__ import annotations

import contextlib
import os
import time
import traceback

from ..errors import XlingError, first_line
from ..train.evaluate import evaluate_run
from ..train.live_log import LiveLog
from ..train.lock import run_lock
from ..train.rundir import RunDir
from ..train.stopping import is_stop
from ..train.trainer import Trainer
from .placement import GPU_VARIABLE
from .spec import RunSpec
from .state import is_complete, now, record


def execute_run(spec_json: dict, root: str, progress: bool = False, loggers: tuple[str, ...] = (),
                then: tuple = ()) -> dict:
    """Train (or resume) and evaluate one run under its lock. Never raises for a failed run.

    Returns {"id", "status": completed | failed | busy | done, "seconds", "error", "gpu", "lines"}; "busy"
    means another process holds the run, "done" that it was completed before we got to it; "gpu" is
    the CUDA_VISIBLE_DEVICES the study runner gave this worker (None: none given). `loggers`
    (tensorboard, wandb, csv) see the training as it goes, then the test perplexities. `then`: (fn, *args), a
    module-level function run here once the run has completed, still under its lock: fn(spec_json, root, *args)
    returns lines for the log ("lines"). An analysis that needs only the run (`xling demo`'s alignment) is thus done
    by the worker that trained it while the others still train, not after them all. Its failure does not fail the
    run: "lines" says it, and what computes the analysis again later meets it in full.
    """
    spec = RunSpec.from_json(spec_json)
    run_dir = spec.run_dir(root)
    gpu = os.environ.get(GPU_VARIABLE)
    result = {"id": spec.id, "status": "busy", "seconds": 0.0, "error": "", "gpu": gpu}
    start = time.perf_counter()
    with contextlib.ExitStack() as held:
        try:
            got = held.enter_context(run_lock(run_dir))
        except XlingError as exc:  # a received run's .lock linked elsewhere: this run fails, the study goes on
            return {**result, "status": "failed", "error": first_line(exc)}
        if not got:
            return result
        if is_complete(run_dir):
            return {**result, "status": "done"}
        attempts = RunDir(run_dir).read_study_record().get("attempts", 0) + 1
        record(run_dir, spec, status="running", started=now(), finished=None, error="", attempts=attempts,
               **({"gpu": gpu} if gpu is not None else {}))
        try:
            with LiveLog(run_dir, loggers) as live:
                info = RunDir(run_dir).read_info(tolerant=True)
                if info.get("status") != "completed":
                    Trainer(spec.run_config, run_dir, live=live).fit(resume=True, progress=progress)
                elif live:  # trained before a kill, not yet evaluated: the logs start from metrics.jsonl
                    live.begin(RunDir(run_dir).read_metrics(), info.get("languages", []))
                live.log_evaluation(evaluate_run(run_dir, split="test", trained_only=True)[0])
            status, error, trace = "completed", "", ""
        except BaseException as exc:
            if is_stop(exc) or not isinstance(exc, Exception):  # Ctrl-C, SIGTERM, `| head`: study.json says so too
                with contextlib.suppress(OSError):  # (a full disk must not turn the stop into a failure)
                    record(run_dir, spec, status="interrupted", finished=now())
                raise
            # a failed run is recorded; the study goes on with the others
            status, error, trace = "failed", _error_line(exc), traceback.format_exc()
        record(run_dir, spec, status=status, finished=now(), error=error, traceback=trace)
        seconds = time.perf_counter() - start
        lines = _then(then, spec_json, root) if then and status == "completed" else []
    return {**result, "status": status, "seconds": seconds, "error": error, "lines": lines}


def _then(then: tuple, spec_json: dict, root: str) -> list[str]:
    fn, *args = then
    try:
        return list(fn(spec_json, root, *args))
    except Exception as exc:  # (Ctrl-C and SIGTERM stop it as they stop training; the run is recorded complete)
        return [f"{spec_json['id']}: its analysis after training failed: {_error_line(exc)}"]


def _error_line(exc: Exception) -> str:
    """An error in one line: xling's own as it is, any other with its type (a bug's, not bad input)."""
    return first_line(exc) if isinstance(exc, XlingError) else f"{type(exc).__name__}: {first_line(exc)}"
