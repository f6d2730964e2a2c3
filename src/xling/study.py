"""Studies: a paper experiment as a named grid of runs, and a resumable runner for it.

A study file (``studies/NAME.yaml``) declares a base run config and groups of runs::

    name: headline-cpu
    description: ...
    paper: Table 1 (50/50, 90/10)
    base: {...a run config...}
    grid: {train.seed: [0, 1, 2]}           # crossed into every group (a group may override a key)
    groups:
      ladder: {set: {languages.p: 0.0}, grid: {train.data_fraction: [0.1, 0.5, 1.0], train.seed: [0]}}
      mix:    {grid: {languages.p: [0.5, 0.1]}}
    figures: [{x: languages.p, y: ppl, mlpe: true}]

``set`` fixes config keys for a group; ``grid`` crosses lists of values. A run's id is its
group, its grid values and a hash of its full resolved config, e.g. ``mix-p0.1-s2-1a2b3c4d``,
so editing the base config makes new runs instead of silently reusing old ones.

The runner executes what is missing into ``ROOT/STUDY/RUN_ID/``. A run directory is the truth:
run.json + eval.json say whether a run is complete; ``study.json`` (written here) records which
study, group and grid values it belongs to and its last attempt; an fcntl lock held while a run
trains keeps two runners (or workers) from doing the same run. Because training checkpoints
and every file write are atomic, a runner killed at any point (kill -9 included) and started
again resumes interrupted runs from their last checkpoint and skips completed ones.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import difflib
import fcntl
import itertools
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import apply_overrides, from_dict, load_yaml, to_dict, validate
from .errors import XlingError
from .fsio import atomic_write_json, json_key

STUDY_KEYS = ("name", "description", "paper", "scale", "base", "grid", "groups", "figures", "one_x",
              "paper_models", "notes")
GROUP_KEYS = ("set", "grid")
FIGURE_KEYS = ("x", "y", "mlpe", "where", "roles", "title")
# Short labels of common grid keys in run ids ("" shows the value alone, e.g. "anchored", "cpu-s").
ABBREV = {"languages.p": "p", "train.seed": "s", "train.data_fraction": "f", "languages.schedule": "sch",
          "languages.num_clones": "k", "languages.frac_clone": "fc", "languages.vocab": "", "model.preset": "",
          "train.steps": "steps", "tokenizer.vocab_size": "v"}
SEED_KEY = "train.seed"
STUDY_FILE = "study.json"  # per run directory: study, group, grid values, config, last attempt
LOCK_FILE = ".lock"


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: its grid values and its full resolved config (a plain dict)."""

    study: str
    group: str
    dims: dict[str, Any]
    config: dict
    id: str

    def run_dir(self, root: str | Path) -> Path:
        return Path(root) / self.study / self.id

    @property
    def setting(self) -> str:
        """The run's group and grid values without the seed: what seeds are averaged over."""
        dims = [f"{k.split('.')[-1]}={_fmt(v)}" for k, v in self.dims.items() if k != SEED_KEY]
        return f"{self.group}: {', '.join(dims)}" if dims else self.group

    def to_json(self) -> dict:
        return {"study": self.study, "group": self.group, "dims": self.dims, "config": self.config, "id": self.id}

    @classmethod
    def from_json(cls, d: dict) -> RunSpec:
        return cls(d["study"], d["group"], d["dims"], d["config"], d["id"])


@dataclass
class Study:
    name: str
    description: str
    paper: str
    scale: str
    runs: list[RunSpec]
    figures: list[dict] = field(default_factory=list)
    one_x: float = 1.0  # the data fraction that counts as the paper's "1x" training length
    paper_models: dict[str, str] = field(default_factory=dict)  # our preset -> the paper's model
    notes: str = ""
    path: Path | None = None

    def spec(self, run_id: str) -> RunSpec:
        return next(r for r in self.runs if r.id == run_id)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _non_default(config: dict, defaults: dict) -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            sub = _non_default(value, defaults[key])
            if sub:
                out[key] = sub
        elif defaults.get(key, object()) != value:
            out[key] = value
    return out


def config_hash(config: dict) -> str:
    """8 hex digits of the resolved config's non-default values (its display name excluded).

    Leaving out values equal to the defaults means a new config field (added with a default that
    keeps the old behaviour) does not orphan existing runs; every value that differs counts.
    """
    from .config import RunConfig

    body = _non_default({k: v for k, v in config.items() if k != "name"}, to_dict(RunConfig()))
    return json_key(body, 8)


def run_label(group: str, dims: dict[str, Any]) -> str:
    parts = [group] + [f"{ABBREV.get(k, k.split('.')[-1])}{_fmt(v)}" for k, v in dims.items()]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def _require_mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise XlingError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _check_keys(data: dict, allowed, where: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(allowed)}"
            raise XlingError(f"{where}: unknown key '{key}' ({hint})")


def _grid(value, where: str) -> dict[str, list]:
    grid = _require_mapping(value, where)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise XlingError(f"{where}.{key} must be a non-empty list of values, e.g. [0.5, 0.1]")
    return grid


def build_study(data: dict, path: Path | None = None) -> Study:
    """Expand and validate a study (a parsed YAML mapping): every run config is checked here."""
    where = f"study {path}" if path else "study"
    _check_keys(data, STUDY_KEYS, where)
    name = data.get("name") or (path.stem if path else "")
    if not name or not re.fullmatch(r"[A-Za-z0-9._-]+", str(name)):
        raise XlingError(f"{where}: 'name' must be letters, digits, '.', '_' or '-', got {name!r}")
    base = _require_mapping(data.get("base"), f"{where}: base")
    top_grid = _grid(data.get("grid"), f"{where}: grid")
    groups = _require_mapping(data.get("groups"), f"{where}: groups") or {"runs": {}}
    runs, seen = [], {}
    for group, body in groups.items():
        body = _require_mapping(body, f"{where}: groups.{group}")
        _check_keys(body, GROUP_KEYS, f"{where}: groups.{group}")
        fixed = _require_mapping(body.get("set"), f"{where}: groups.{group}.set")
        own = _grid(body.get("grid"), f"{where}: groups.{group}.grid")
        grid = {**own, **{k: v for k, v in top_grid.items() if k not in own}}  # the group's own keys name runs first
        for combo in itertools.product(*grid.values()):
            dims = dict(zip(grid, combo))
            label = run_label(str(group), dims)
            cfg_data = apply_overrides(apply_overrides(copy.deepcopy(base), dict(fixed)), dict(dims))
            cfg_data["name"] = label
            try:
                cfg = from_dict(cfg_data)
                validate(cfg)
            except XlingError as exc:
                raise XlingError(f"{where}: run {label}: {exc}") from None
            config = to_dict(cfg)
            digest = config_hash(config)
            if digest in seen:
                raise XlingError(f"{where}: runs {seen[digest]} and {label} have the same config; remove one of them")
            seen[digest] = label
            runs.append(RunSpec(str(name), str(group), dims, config, f"{label}-{digest}"))
    figures = data.get("figures") or []
    for i, fig in enumerate(figures):
        _check_keys(_require_mapping(fig, f"{where}: figures[{i}]"), FIGURE_KEYS, f"{where}: figures[{i}]")
        if fig.get("y", "ppl") not in ("ppl", "teff"):
            raise XlingError(f"{where}: figures[{i}].y must be ppl or teff, got {fig.get('y')!r}")
    one_x = data.get("one_x", 1.0)
    if not isinstance(one_x, (int, float)) or one_x <= 0:
        raise XlingError(f"{where}: one_x must be a positive number (the data fraction of the paper's 1x)")
    return Study(str(name), str(data.get("description", "")).strip(), str(data.get("paper", "")),
                 str(data.get("scale", "")), runs, figures, float(one_x),
                 dict(_require_mapping(data.get("paper_models"), f"{where}: paper_models")),
                 str(data.get("notes", "")).strip(), path)


# --------------------------------------------------------------------------- finding studies


def study_dirs() -> list[Path]:
    """Where study names are looked up: $XLING_STUDIES, ./studies, the source checkout's studies/."""
    dirs = [Path(p) for p in os.environ.get("XLING_STUDIES", "").split(os.pathsep) if p]
    dirs += [Path("studies"), Path(__file__).resolve().parents[2] / "studies"]
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def available_studies() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in study_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def find_study(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or os.sep in name:
        if not path.is_file():
            raise XlingError(f"study file not found: {path}")
        return path
    found = available_studies()
    if name in found:
        return found[name]
    close = difflib.get_close_matches(name, list(found), n=1, cutoff=0.4)
    hint = f"did you mean '{close[0]}'? " if close else ""
    listing = ", ".join(found) or "none (no studies/ directory here; set XLING_STUDIES)"
    raise XlingError(f"unknown study '{name}': {hint}available: {listing}")


def load_study(name: str) -> Study:
    path = find_study(name)
    return build_study(load_yaml(path), path)


def runs_root(root: str | Path | None = None) -> Path:
    """Where run directories live: --root, else $XLING_RUNS, else ./runs."""
    return Path(root or os.environ.get("XLING_RUNS") or "runs")


# --------------------------------------------------------------------------- run state


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_json_file(path: Path) -> dict:
    """A JSON file's content, or {} when it is missing or unreadable (the runner then redoes the work)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_complete(run_dir: Path) -> bool:
    info = read_json_file(run_dir / "run.json")
    return info.get("status") == "completed" and (run_dir / "eval.json").is_file()


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """Hold the run's lock (yields True) or learn that another process holds it (yields False).

    The kernel drops an flock when its process dies, so a killed runner never leaves a stale lock.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(run_dir: Path) -> bool:
    if not (run_dir / LOCK_FILE).is_file():
        return False
    with run_lock(run_dir) as got:
        return not got


def run_state(run_dir: Path) -> str:
    """pending | running | interrupted | failed | completed, read from the run directory."""
    if is_complete(run_dir):
        return "completed"
    if not run_dir.is_dir():
        return "pending"
    if is_locked(run_dir):
        return "running"
    if read_json_file(run_dir / STUDY_FILE).get("status") == "failed":
        return "failed"
    return "interrupted" if (run_dir / "run.json").is_file() else "pending"


def _record(run_dir: Path, spec: RunSpec, **fields) -> None:
    record = read_json_file(run_dir / STUDY_FILE) or spec.to_json()
    record.update(spec.to_json())
    record.update(fields)
    atomic_write_json(run_dir / STUDY_FILE, record)


# --------------------------------------------------------------------------- reusing a twin run


def _identity(config: dict) -> dict:
    """What makes two runs the same run: the resolved config, its display name aside."""
    return {k: v for k, v in to_dict(from_dict(config)).items() if k != "name"}


def find_twin(spec: RunSpec, root: str | Path) -> Path | None:
    """A completed run of another study under `root` with exactly this run's config.

    Studies often share runs (the headline's 50/50 and 90/10 runs are also in Table 1 and Figure
    1): the config hash at the end of a run id finds the candidates, the full config decides.
    """
    digest = spec.id.rsplit("-", 1)[-1]
    own = _identity(spec.config)
    for candidate in sorted(Path(root).glob(f"*/*-{digest}")):
        if candidate.parent.name == spec.study or not is_complete(candidate):
            continue
        try:
            if _identity(load_yaml(candidate / "config.yaml")) == own:
                return candidate
        except (XlingError, OSError):  # a config this version cannot read is no twin
            continue
    return None


def adopt_twin(spec: RunSpec, twin: Path, root: str | Path) -> bool:
    """Make `spec`'s run directory a copy of its completed twin's, instead of training it again.

    Only a run that has not started (no run.json) adopts. Checkpoint files, which nothing ever
    rewrites in place, are hard links when the file system allows; everything else is copied.
    run.json goes last: until it is there the copy is not complete, so an interrupted adoption
    is simply redone. Returns False if another process holds the run.
    """
    import shutil

    run_dir = spec.run_dir(root)
    with run_lock(run_dir) as got:
        if not got or (run_dir / "run.json").is_file():
            return False
        files = [p for p in twin.rglob("*") if p.is_file() and p.name not in (LOCK_FILE, STUDY_FILE)]
        files.sort(key=lambda p: (p.relative_to(twin) == Path("run.json"), str(p)))
        for src in files:
            dst = run_dir / src.relative_to(twin)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".adopt-{dst.name}")
            tmp.unlink(missing_ok=True)
            try:
                if "checkpoints" not in src.relative_to(twin).parts:
                    raise OSError("copied, not linked")
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        _record(run_dir, spec, status="completed", started=now(), finished=now(), error="", attempts=0,
                reused_from=str(twin.relative_to(root)))
    return True


# --------------------------------------------------------------------------- executing one run


def execute_run(spec_json: dict, root: str, progress: bool = False) -> dict:
    """Train (or resume) and evaluate one run under its lock. Never raises for a failed run.

    Returns {"id", "status": completed | failed | busy | done, "seconds", "error"}; "busy" means
    another process holds the run, "done" that it was completed before we got to it.
    """
    from .evaluate import evaluate_run
    from .train import Trainer

    spec = RunSpec.from_json(spec_json)
    run_dir = spec.run_dir(root)
    result = {"id": spec.id, "status": "busy", "seconds": 0.0, "error": ""}
    start = time.perf_counter()
    with run_lock(run_dir) as got:
        if not got:
            return result
        if is_complete(run_dir):
            return {**result, "status": "done"}
        attempts = read_json_file(run_dir / STUDY_FILE).get("attempts", 0) + 1
        _record(run_dir, spec, status="running", started=now(), finished=None, error="", attempts=attempts)
        try:
            if read_json_file(run_dir / "run.json").get("status") != "completed":
                Trainer(from_dict(spec.config), run_dir).fit(resume=True, progress=progress)
            evaluate_run(run_dir, split="test", trained_only=True)
            status, error, trace = "completed", "", ""
        except Exception as exc:  # a failed run is recorded; the study goes on with the others
            status = "failed"
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not isinstance(exc, XlingError):
                error = f"{type(exc).__name__}: {error}"
            trace = traceback.format_exc()
        _record(run_dir, spec, status=status, finished=now(), error=error, traceback=trace)
    return {**result, "status": status, "seconds": time.perf_counter() - start, "error": error}


def _worker_init(threads: int) -> None:
    """Each worker process: its share of the cores, and death with its parent (Linux)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # The wait policy `xling` chose from the load average (cli._threads_setup) is inherited;
    # without one (called from Python), sleep at once: workers share the machine.
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    with contextlib.suppress(Exception):  # so a kill -9 of the runner does not leave workers training
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    import torch

    torch.set_num_threads(threads)


def _ray_task(spec_json: dict, root: str, threads: int) -> dict:
    _worker_init(threads)
    return execute_run(spec_json, root)


# --------------------------------------------------------------------------- the runner


def preflight(study: Study) -> None:
    """Build every tokenizer and token array the study needs, before any run directory is written.

    Data problems (a missing corpus, too little text) surface here as one error, and workers
    never race to build the same cache files.
    """
    from .data import budget_steps, prepare_languages

    seen = set()
    for spec in study.runs:
        key = json.dumps([spec.config[k] for k in ("corpus", "tokenizer")] + [spec.config["languages"]["kind"],
                          spec.config["languages"]["second"], spec.config["languages"]["vocab"]], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        cfg = from_dict(spec.config)
        setup = prepare_languages(cfg)
        for source in sorted(set(setup.source_of_language)):
            for split in ("train", "valid", "test"):
                setup.tokens(source, split)
        budget_steps(setup, cfg.model.seq_len, cfg.train.batch_size)


def _cost(spec: RunSpec) -> float:
    """Rough relative cost, to start long runs first (shorter total time with several workers):
    training tokens x the model's matmul work per token (two languages' vocabulary assumed)."""
    from .model import resolve_model

    cfg = from_dict(spec.config)
    d = resolve_model(cfg.model, 2 * cfg.tokenizer.vocab_size)
    per_token = d.n_layers * (4 * d.d_model ** 2 + 2 * d.d_model * d.d_mlp) + d.d_model * d.vocab_size
    return (cfg.train.steps or cfg.train.data_fraction * 1000) * cfg.train.batch_size * d.seq_len * per_token


def run_study(study: Study, root: str | Path | None = None, workers: int = 1, engine: str = "local",
              db: str | Path | None = None, progress: bool | None = None, log=print,
              loggers: tuple[str, ...] = (), reuse: bool = True) -> dict:
    """Run every missing run of `study`; returns counts per outcome. Safe to interrupt and rerun.

    With `reuse`, a missing run whose twin (same config) is complete in another study under the
    same root is copied from it instead of trained (counted as completed, logged as reused)."""
    from .store import Store, export_run

    if engine not in ("local", "ray"):
        raise XlingError(f"--engine must be local or ray, got '{engine}'")
    if workers < 1:
        raise XlingError(f"--workers must be >= 1, got {workers}")
    root = runs_root(root)
    store = Store(db or root / "xling.db")
    store.sync(study, root)
    todo = [s for s in study.runs if not is_complete(s.run_dir(root))]
    counts = {"total": len(study.runs), "completed": len(study.runs) - len(todo), "failed": 0, "busy": 0}
    log(f"study {study.name}: {len(study.runs)} runs, {counts['completed']} already complete, {len(todo)} to run"
        + (f" ({workers} workers, {engine})" if todo and (workers > 1 or engine != "local") else ""))
    if reuse:
        for spec in todo:
            twin = find_twin(spec, root)
            if twin and adopt_twin(spec, twin, root):
                store.index_run(spec.run_dir(root))
                counts["completed"] += 1
                log(f"  {spec.id}: reused from {twin.relative_to(root)} (same config; --no-reuse trains it anew)")
        todo = [s for s in todo if not is_complete(s.run_dir(root))]
    if not todo:
        return counts
    preflight(study)
    log(f"data ready; one line per finished run below (`xling study status {study.name}` shows progress)")
    todo.sort(key=_cost, reverse=True)
    if progress is None:
        progress = sys.stderr.isatty()
    started = time.perf_counter()
    for n, result in enumerate(_execute(todo, root, workers, engine, progress), 1):
        spec = study.spec(result["id"])
        store.index_run(spec.run_dir(root))
        status = result["status"]
        counts["completed" if status in ("completed", "done") else status] += 1
        if status == "completed":
            for name in loggers:
                note = export_run(spec.run_dir(root), name)
                if note:
                    log(f"  note: {note}")
        elapsed = time.perf_counter() - started
        detail = {"completed": f"in {result['seconds']:.0f} s", "done": "by another process",
                  "busy": "skipped: another process is running it", "failed": f"FAILED: {result['error']}"}[status]
        log(f"[{n}/{len(todo)}] {spec.id} {detail} ({elapsed:.0f} s elapsed)")
    if counts["failed"]:
        log(f"{counts['failed']} run(s) failed; see {STUDY_FILE} in their run directories. "
            f"`xling study run {study.name}` retries them.")
    if counts["busy"]:
        log(f"{counts['busy']} run(s) were being run by another process; run again to pick up what is left.")
    return counts


def _execute(todo: list[RunSpec], root: Path, workers: int, engine: str, progress: bool) -> Iterator[dict]:
    """Yield execute_run results as runs finish: in this process, in a spawn pool, or as Ray tasks."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    if engine == "ray":
        yield from _execute_ray(todo, root, workers, threads)
    elif workers == 1:
        for spec in todo:
            yield execute_run(spec.to_json(), str(root), progress)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                    initargs=(threads,)) as pool:
            futures = [pool.submit(execute_run, spec.to_json(), str(root)) for spec in todo]
            try:
                for future in cf.as_completed(futures):
                    yield future.result()
            except cf.process.BrokenProcessPool:
                raise XlingError("a worker process died (out of memory?); run `xling study run` again to continue, "
                                 "perhaps with fewer --workers") from None
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


def _execute_ray(todo: list[RunSpec], root: Path, workers: int, threads: int) -> Iterator[dict]:
    """Each run is one Ray task. With RAY_ADDRESS set, tasks go to that cluster (ROOT must be shared)."""
    try:
        import ray
    except ImportError:
        raise XlingError("--engine ray needs Ray: pip install 'xling[ray]' (or use the default --engine local)") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": workers * threads}))
    task = ray.remote(num_cpus=threads)(_ray_task)
    pending = [task.remote(spec.to_json(), str(root.resolve()), threads) for spec in todo]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


# --------------------------------------------------------------------------- status


def study_status(study: Study, root: str | Path | None = None) -> list[dict]:
    """One row per run: id, group, state, step, steps (from the run directory)."""
    root = runs_root(root)
    rows = []
    for spec in study.runs:
        run_dir = spec.run_dir(root)
        info = read_json_file(run_dir / "run.json")
        step = info.get("step") if info.get("status") == "completed" else _last_step(run_dir)
        rows.append({"id": spec.id, "group": spec.group, "state": run_state(run_dir), "step": step or 0,
                     "steps": info.get("steps"), "error": read_json_file(run_dir / STUDY_FILE).get("error", "")})
    return rows


def _last_step(run_dir: Path) -> int:
    from .runs import RunDir

    steps = [r.get("step", 0) for r in RunDir(run_dir).read_metrics() if "loss" in r]
    return steps[-1] if steps else 0


def format_status(study: Study, rows: list[dict]) -> str:
    width = max([len(r["id"]) for r in rows] + [3])
    lines = [f"study {study.name}: {study.description.splitlines()[0] if study.description else ''}".rstrip(),
             f"  {'run':<{width}}  {'state':<11}  progress"]
    for r in rows:
        prog = f"{r['step']}/{r['steps']}" if r["steps"] else "-"
        extra = f"  {r['error']}" if r["state"] == "failed" else ""
        lines.append(f"  {r['id']:<{width}}  {r['state']:<11}  {prog}{extra}")
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append("  " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + f" (of {len(rows)})")
    return "\n".join(lines)
