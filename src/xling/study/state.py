"""The state of a study's run, read from its run directory: what the runner, the store and
`xling study status` all ask.

A run directory is the truth: run.json + eval.json say whether a run is complete; study.json
(written by the runner) records which study, group and grid values it belongs to and its last
attempt; an fcntl lock held while a run trains keeps two runners (or workers) from doing the
same run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import subprocess
import sys
from pathlib import Path

from ..errors import XlingError
from ..fsio import atomic_write_json, make_dirs, read_json
from ..train.lock import is_locked, lock_state
from ..train.rundir import RunDir
from .spec import RunSpec, Study, runs_root


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def is_complete(run_dir: Path) -> bool:
    """Trained and evaluated under its own protocol (an eval.json scored otherwise is evaluated again)."""
    run = RunDir(run_dir)
    if run.read_info(tolerant=True).get("status") != "completed" or not run.eval_path().is_file():
        return False
    try:
        report = run.read_evaluation(run.eval_path())
    except XlingError:  # a perplexity no model gives: scored again (evaluation is deterministic)
        return False
    try:
        return run.scored_as_configured(report)
    except (XlingError, OSError, ValueError):  # an unreadable config: the store reports the run
        return True


# Run by a second process while the runner holds the lock file: exit 0 when it is refused the lock.
_PROBE = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\ntry:\n"
          "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(0)\nsys.exit(3)\n")
LOCKS_NEEDED = ("the run locks need flock() locks that hold between processes, and between machines when "
                "several share ROOT (a local disk; NFS v4, or v3 with lockd, not mounted nolock; Lustre mounted with "
                "-o flock, not localflock; BeeGFS with tuneUseGlobalFileLocks): choose a --root on such a file system")


def check_locking(root: Path) -> None:
    """Stop with one line unless flock() locks under `root` keep a second process out.

    On a file system without working locks (an NFS mount with nolock, a FUSE file system) two
    runners, or two nodes of a SLURM array, would train the same run. A lock that only holds
    within one machine (Lustre's localflock) cannot be seen from here: the README says so.
    """
    created = not root.exists()
    make_dirs(root)
    path = root / ".lock-check"
    problem = _lock_problem(path)
    if problem:
        if created:  # a refused --root is left as it was found
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                root.rmdir()
        raise XlingError(f"--root {root}: file locks do not work there ({problem}); " + LOCKS_NEEDED)


def _lock_problem(path: Path) -> str | None:
    """Why flock() on `path` does not keep a second process out, or None when it does."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another runner is checking this very moment: the lock held it off
        except OSError as exc:
            return f"flock: {exc.strerror}"
        try:
            probe = subprocess.run([sys.executable, "-I", "-S", "-c", _PROBE, str(path)], timeout=60,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except subprocess.TimeoutExpired:
            return "a lock check did not finish in 60 s"
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if probe.returncode == 3:
        return "a second process got the lock this one held"
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["the check failed"])[-1]


def run_state(run_dir: Path) -> str:
    """pending | running | interrupted | failed | trained | completed, read from the run directory
    (trained: training finished but there is no test evaluation: `--no-eval`, or stopped during it;
    a study evaluates such a run when it runs again)."""
    if is_complete(run_dir):
        return "completed"
    if not run_dir.is_dir():
        return "pending"
    if is_locked(run_dir):
        return "running"
    run = RunDir(run_dir)
    if run.read_study_record().get("status") == "failed":
        return "failed"
    if run.read_info(tolerant=True).get("status") == "completed":
        return "trained"
    return "interrupted" if run.info_path.is_file() else "pending"


def record(run_dir: Path, spec: RunSpec, **fields) -> None:
    """Update the run's study.json with the spec and `fields` (status, times, error, ...)."""
    run = RunDir(run_dir)
    content = run.read_study_record() or spec.to_json()
    content.update(spec.to_json())
    content.update(fields)
    atomic_write_json(run.study_record_path, content)


def any_run_state(run_dir: Path) -> str:
    """The state of any run directory: a study's run as `run_state` reads it; any other as its run.json says
    (pending before it starts; completed once trained, test-evaluated or not), except that a run.json still saying
    running while no process holds the run's lock was stopped without a word (kill -9, a lost machine): interrupted."""
    run = RunDir(run_dir)
    if run.study_record_path.is_file():
        return run_state(run_dir)
    held = lock_state(run_dir)
    if held:
        return "running"
    status = str(run.read_info().get("status", "pending"))  # (a damaged run.json: one line that says so)
    return "interrupted" if status == "running" and held is False else status


def run_progress(run_dir: Path, in_study: bool = False) -> dict:
    """state (`run_state` of a study's run, else `any_run_state`), step (the last one logged), checkpoint (the step
    a resume starts from), steps, error (study.json's; else run.json's, of a failed run), evaluated (whether its test
    evaluation is there)."""
    run = RunDir(run_dir)
    info = run.read_info(tolerant=True)
    step = info.get("step") if info.get("status") == "completed" else _last_step(run.path)
    state = run_state(run.path) if in_study else any_run_state(run.path)
    error = run.read_study_record().get("error") or (info.get("error") if state == "failed" else "")
    return {"state": state, "step": step or 0, "checkpoint": run.newest_checkpoint_step(), "steps": info.get("steps"),
            "error": error or "", "evaluated": run.eval_path().is_file()}


def status_rows(paths: list[Path]) -> list[dict]:
    """`xling status`: one row per run directory named, or found in a directory named (ROOT/RUN or ROOT/STUDY/RUN),
    each once: path (as named), study (a study's run) and its `run_progress`; where its files cannot be read, state
    damaged and the reason as its error."""
    found = {}
    for path in map(Path, paths):
        if not path.is_dir():
            RunDir(path).require()  # one line: a file, or nothing there
        runs = [path] if RunDir(path).started() else _runs_inside(path)
        if not runs:
            raise XlingError(f"{path} is not a run directory and holds none: pass the directory `xling train` wrote "
                             "(or a directory of runs, such as a study's root)")
        for run in runs:
            found.setdefault(run.resolve(), run)
    return [{"path": str(run), "study": _study_name(run), **_progress_or_damage(run)} for run in found.values()]


def _study_name(run: Path) -> str:
    with contextlib.suppress(XlingError, OSError, ValueError):
        return RunDir(run).read_study_record().get("study", "")
    return ""


def check_run_files(run: Path) -> None:
    """One XlingError where a run's config.yaml, study.json or an evaluation cannot be read as the store and reports
    read them (nothing can be done with the run then)."""
    run_dir = RunDir(run)
    odd = next((path for path in (run_dir.config_path, run_dir.info_path, run_dir.study_record_path)
                if os.path.lexists(path) and not path.is_file()), None)
    if odd:  # (a FIFO would block a read, a link to a device never end it: such a run was made to be read)
        raise XlingError(f"{odd} is not a regular file (a folder, a FIFO, a device or a dangling link): nothing of "
                         "the run can be trusted; copy it again from its source")
    if run_dir.config_path.is_file():
        run_dir.read_config()
    if run_dir.info_path.is_file() and read_json(run_dir.info_path, default=None) == {}:  # (training writes a status)
        raise XlingError(f"{run_dir.info_path} holds no status (emptied): `xling train {run} --resume` writes it "
                         "again from the newest checkpoint")
    if run_dir.study_record_path.is_file() and not run_dir.read_study_record():  # (it always holds the run's spec)
        raise XlingError(f"{run_dir.study_record_path} cannot be read: `xling study run` of its study writes it "
                         "again (a finished run is not trained again)")
    for path in run_dir.eval_paths():
        try:
            run_dir.read_evaluation(path, tolerant=False)
        except XlingError as exc:
            raise XlingError(f"{exc}: score it again (xling eval {run}; a study's run: xling study run)") from None


def _progress_or_damage(run: Path, in_study: bool = False) -> dict:
    """`run_progress`, and where the run's files cannot be read (`check_run_files`, run.json) state damaged and the
    reason as its error."""
    damage = ""
    try:
        check_run_files(run)
    except (XlingError, OSError, ValueError) as exc:
        damage = str(exc)
    try:
        progress = run_progress(run, in_study)
    except (XlingError, OSError, ValueError) as exc:
        progress, damage = {"step": 0, "checkpoint": 0, "steps": None, "evaluated": False}, damage or str(exc)
    return {**progress, "state": "damaged", "error": damage} if damage else progress


def _runs_inside(path: Path) -> list[Path]:
    """The run directories in `path`, and in its directories that are not runs (a root's studies), sorted."""
    runs = []
    for child in sorted(d for d in path.iterdir() if d.is_dir()):
        runs += [child] if RunDir(child).started() else sorted(d for d in child.iterdir() if RunDir(d).started())
    return runs


def study_status(study: Study, root: str | Path | None = None) -> list[dict]:
    """One row per run: id, group and its `run_progress`."""
    root = runs_root(root)
    return [{"id": spec.id, "group": spec.group, **_progress_or_damage(spec.run_dir(root), in_study=True)}
            for spec in study.runs]


def _last_step(run_dir: Path) -> int:
    steps = [r.get("step", 0) for r in RunDir(run_dir).read_metrics() if "loss" in r]
    return steps[-1] if steps else 0
