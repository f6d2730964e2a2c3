"""The resumable study runner: trains what is missing, in this process, in local workers or on Ray
(`launch`), on the CPU or one GPU per worker (`placement`).

The runner executes every missing run of a study into ``ROOT/STUDY/RUN_ID/`` under the run's
lock (`train.lock.run_lock`). Because training checkpoints and every file write are atomic, a runner
killed at any point (kill -9 included) and started again resumes interrupted runs from their
last checkpoint and skips completed ones. A run another study already completed with exactly
the same config is copied instead of trained again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..config import load_yaml
from ..data.parallel import check_not_importing_the_script
from ..data.stream import budget_steps, prepare_languages, run_mixture, run_steps
from ..errors import XlingError
from ..fsio import atomic_write_json, make_dirs, read_json
from ..identity import run_identity
from ..train.live_log import logger_names, unavailable
from ..train.lock import is_locked, lock_holder, run_lock
from ..train.rundir import RunDir
from .execute import execute_run  # noqa: F401  (the runner's one-run step, imported from here by callers)
from .exports import export_run
from .launch import Launch, auto_workers, run_dims
from .spec import RunSpec, Study, runs_root
from .state import check_locking, is_complete, now, record
from .store import STORE_NAME, Store

# --------------------------------------------------------------------------- reusing a twin run


def find_twin(spec: RunSpec, root: str | Path) -> Path | None:
    """A completed run of another study under `root` with exactly this run's config.

    Studies often share runs (the headline's 50/50 and 90/10 runs are also in Table 1 and Figure
    1): the config hash at the end of a run id finds the candidates, the full config decides.
    """
    digest = spec.id.rsplit("-", 1)[-1]
    own = run_identity(spec.config)
    for candidate in sorted(Path(root).glob(f"*/*-{digest}")):
        if candidate.parent.name == spec.study or not is_complete(candidate):
            continue
        try:
            if run_identity(load_yaml(RunDir(candidate).config_path)) == own:
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
    run_dir = spec.run_dir(root)
    run = RunDir(run_dir)
    with run_lock(run_dir) as got:
        if not got or run.info_path.is_file():
            return False
        own = (run.lock_path.name, run.study_record_path.name)  # the runner's, not the run's
        files = [p for p in twin.rglob("*") if p.is_file() and p.name not in own]
        info = RunDir(twin).info_path
        files.sort(key=lambda p: (p == info, str(p)))
        for src in files:
            dst = run_dir / src.relative_to(twin)
            make_dirs(dst.parent)
            tmp = dst.with_name(f".adopt-{dst.name}")
            tmp.unlink(missing_ok=True)
            analysis = _analysis_of(src, twin)
            try:
                if analysis is not None:  # an alignment or transfer names its run: this one, and where it came from
                    atomic_write_json(tmp, {**analysis, "run": str(run_dir), "copied_from": analysis["run"]})
                elif RunDir(twin).checkpoints not in src.parents:
                    raise OSError("copied, not linked")
                else:
                    os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        record(run_dir, spec, status="completed", started=now(), finished=now(), error="", attempts=0,
               reused_from=str(twin.relative_to(root)))
    return True


def _analysis_of(path: Path, run_dir: Path) -> dict | None:
    """The JSON of an analysis of the run (alignment/, transfer/), which names its run at the top; else None."""
    if path.suffix != ".json" or path.relative_to(run_dir).parts[0] not in ("alignment", "transfer"):
        return None
    content = read_json(path, default={})
    return content if isinstance(content.get("run"), str) else None


# --------------------------------------------------------------------------- the runner


def preflight(study: Study) -> None:
    """Build every tokenizer and token array the study needs, before any run directory is written.

    Data problems (a missing corpus, too little text) surface here as one error, and workers
    never race to build the same cache files.
    """
    seen: dict = {}
    for spec in study.runs:
        languages = spec.config["languages"]
        key = json.dumps([spec.config[k] for k in ("corpus", "tokenizer")] + [languages["kind"], languages["second"],
                          languages["vocab"]] + ([languages["corpora"]] if languages.get("corpora") else []),
                         sort_keys=True)
        cfg = spec.run_config
        if key not in seen:
            seen[key] = setup = prepare_languages(cfg)
            for source in sorted(set(setup.source_of_language)):
                for split in ("train", "valid", "test"):
                    setup.tokens(source, split)
            budget_steps(setup, cfg)
        if cfg.languages.unimax_epochs:  # UniMax's caps must fill the run's tokens
            run_mixture(cfg, seen[key], run_steps(cfg, seen[key]))
        orders = [spec.mixture.word_order(lang) for lang in range(seen[key].num_languages)]
        if any(orders):  # reordered streams written to the cache once, here; a tokenizer without word starts refused
            setup = dataclasses.replace(seen[key], word_orders=orders)
            for lang in (lang for lang, order in enumerate(orders) if order):
                for split in ("train", "valid", "test"):
                    setup.ordered_tokens(lang, split)


def _cost(spec: RunSpec) -> float:
    """Rough relative cost, to start long runs first (shorter total time with several workers):
    training tokens x the model's matmul work per token."""
    cfg = spec.run_config
    per_token = run_dims(spec).num_parameters()  # ~ matmul work per token
    tokens = cfg.train.steps * cfg.train.batch_size * cfg.model.seq_len or cfg.train.data_fraction * (
        cfg.train.budget_tokens or 1000 * cfg.train.batch_size * cfg.model.seq_len)  # (unpinned: the pass is unknown)
    return tokens * per_token


def _usable_loggers(loggers: tuple[str, ...], log) -> tuple[str, ...]:
    """The live loggers whose package is installed; one note for each that is not."""
    notes = {name: unavailable(name) for name in dict.fromkeys(loggers)}
    for note in filter(None, notes.values()):
        log(f"note: {note}")
    return tuple(name for name, note in notes.items() if not note)


def _adopt_twins(todo: list, root: Path, store: Store, loggers: tuple[str, ...], log) -> int:
    """Copy each missing run's completed twin (same config, another study under the same root); how many."""
    adopted = 0
    for spec in todo:
        twin = find_twin(spec, root)
        if twin and adopt_twin(spec, twin, root):
            store.try_index(spec.run_dir(root))
            adopted += 1
            log(f"  {spec.id}: reused from {twin.relative_to(root)} (same config; --no-reuse trains it anew)")
            for name in loggers:  # the twin's logs were copied; rewritten here in case it had none
                export_run(spec.run_dir(root), name)
    return adopted


def _resuming(todo: list[RunSpec], root: Path, shown: int = 3) -> str:
    """'; K resume from a checkpoint: ID at step N, ...' for the runs left that have one (else ''). The newest
    checkpoint, not checksummed here (seconds for large runs): training skips a damaged one, with a warning."""
    steps = {spec.id: RunDir(spec.run_dir(root)).newest_checkpoint_step() for spec in todo}
    found = [f"{run} at step {step}" for run, step in steps.items() if step]
    if not found:
        return ""
    more = f", and {len(found) - shown} more" if len(found) > shown else ""
    return f"; {len(found)} resume{'s' * (len(found) == 1)} from a checkpoint: {', '.join(found[:shown])}{more}"


def _auto_launch(study: Study, todo: list[RunSpec], root: Path, engine: str, runs_per_gpu: int, log) -> Launch:
    """Workers for the runs left to train (after any were copied from their twins), each with the threads the study's
    runs trained with (run.json's threads, the most common; before any trained, those of the whole study's layout on
    this machine): the thread count changes a run's numbers (sums in another order), so a rerun with fewer runs left
    trains them as a fresh study would, rather than faster with more threads each."""
    cores = Launch.plan(engine, 1, None, runs_per_gpu).threads  # this process's usable cores
    whole = auto_workers(study.runs)
    recorded = (RunDir(s.run_dir(root)).trained_threads() for s in study.runs)
    trained = Counter(t for t in recorded if t is not None and 1 <= t <= cores)
    threads = trained.most_common(1)[0][0] if trained else max(1, cores // whole)
    workers = max(1, min(auto_workers(todo), cores // threads))
    if workers == len(todo) and workers * threads < cores:
        log(f"{len(todo)} run{'s' * (len(todo) != 1)} left: {threads} thread{'s' * (threads != 1)} each, as the "
            f"study's runs have (another count changes a run's numbers; `--workers {workers}` shares out the cores)")
    return dataclasses.replace(Launch.plan(engine, workers, None, runs_per_gpu, progress=False), threads=threads,
                               in_worker_process=whole > 1)


def _restore_study_records(study: Study, root: Path, log) -> None:
    """Write again the study.json of a finished run where it cannot be read (damaged): without it the run is neither
    indexed under its study nor reported, and it needs no training."""
    for spec in study.runs:
        run = RunDir(spec.run_dir(root))
        if run.study_record_path.is_file() and not run.read_study_record() and is_complete(run.path) \
                and not is_locked(run.path):
            record(run.path, spec, status="completed", restored=now())
            log(f"{spec.id}: its study.json could not be read: written again (the run had finished)")


def run_study(study: Study, root: str | Path | None = None, workers: int | str | None = None, engine: str = "local",
              db: str | Path | None = None, progress: bool | None = None, log=None,
              loggers: tuple[str, ...] = (), reuse: bool = True, poll: float = 2.0,
              gpus: str | tuple[int, ...] | None = None, runs_per_gpu: int = 1, wait: bool = True,
              then: tuple = ()) -> dict:
    """Run every missing run of `study`; returns counts per outcome. Safe to interrupt and rerun.

    `workers` runs train at a time (default 1, in this process, or one per GPU place with `gpus`): local
    processes, or Ray tasks with `engine` "ray"; "auto": on the local CPU, one per usable core, at
    most one per run and what memory holds (`launch.auto_workers`; elsewhere as None). `gpus` ("auto" or GPU numbers) gives each local worker its own
    GPU, `runs_per_gpu` workers per GPU (`placement`). `loggers` (tensorboard, wandb, csv) log each
    run as it trains; a missing package is one note. With `reuse`, a missing run whose twin (same
    config) is complete in another study under the same root is copied from it instead of trained
    (counted as completed, logged as reused). A run another runner holds is waited for (its lock
    checked every `poll` seconds), then counted when that runner finished it or trained here when
    it did not; with `wait` False it is left to that runner and counted as "elsewhere" (a SLURM
    array's nodes then stop when nothing is left for them). `log(line)` is told of progress, one
    line per finished run (the CLI passes print). `then`: (fn, *args), run by the worker after each run it
    completes, its lines logged after the run's (`execute_run`; `xling demo` aligns its runs so)."""
    check_not_importing_the_script()  # (before its first line: a worker importing the script would print it too)
    log = log or (lambda _: None)
    auto = workers == "auto" and engine == "local" and gpus is None  # else "auto" means the default
    launch = Launch.plan(engine, None if workers == "auto" else workers, gpus, runs_per_gpu, progress=False)
    loggers = _usable_loggers(logger_names(loggers), log)  # (before any line)
    root = runs_root(root)
    fresh = not root.exists()
    check_locking(root)
    store = Store(db or root / STORE_NAME)
    _restore_study_records(study, root, log)
    store.sync(study, root)
    todo = [s for s in study.runs if not is_complete(s.run_dir(root))]
    counts = {"total": len(study.runs), "completed": len(study.runs) - len(todo), "failed": 0}
    if not wait:
        counts["elsewhere"] = 0
    parallel = launch.workers > 1 or engine != "local" or launch.gpus
    log(f"study {study.name}: {len(study.runs)} run{'s' * (len(study.runs) != 1)}, {counts['completed']} already complete, {len(todo)} to run"
        + (f" ({launch.describe()})" if todo and parallel and not auto else "") + _resuming(todo, root))
    if reuse:
        counts["completed"] += _adopt_twins(todo, root, store, loggers, log)
        todo = [s for s in todo if not is_complete(s.run_dir(root))]
    if not todo:
        return counts
    if auto:
        launch = _auto_launch(study, todo, root, engine, runs_per_gpu, log)
    try:
        preflight(study)
    except XlingError:  # bad data: a root made just now is taken away again (nothing written)
        store.close()
        if fresh and {p.name for p in root.iterdir()} <= {"xling.db", "xling.db-wal", "xling.db-shm", ".lock-check"}:
            shutil.rmtree(root)
        raise
    log(f"data ready{f' ({launch.describe()})' if auto and launch.workers > 1 else ''}; one line per finished run "
        f"below (`{study.command('status', root)}` shows progress)")
    todo.sort(key=_cost, reverse=True)
    progress = sys.stderr.isatty() if progress is None else progress
    launch = dataclasses.replace(launch, loggers=loggers, progress=progress, then=then)
    started, total, done = time.perf_counter(), len(todo), 0
    while todo:
        busy = []
        # closed at once when stopped (launch.run_each says why)
        with contextlib.closing(launch.execute(todo, root)) as results:
            for result in results:
                spec = study.spec(result["id"])
                if result["status"] == "busy":  # another runner trains it: wait for it below
                    busy.append(spec)
                    continue
                done += 1
                store.try_index(spec.run_dir(root))
                counts["completed" if result["status"] in ("completed", "done") else "failed"] += 1
                detail = {"completed": f"in {result['seconds']:.0f} s", "done": "by another process",
                          "failed": f"FAILED: {result['error']}"}[result["status"]]
                where = f" on GPU {result['gpu']}" if result.get("gpu") and result["status"] != "done" else ""
                log(f"[{done}/{total}] {spec.id} {detail}{where} ({time.perf_counter() - started:.0f} s elapsed)")
                for line in result.get("lines", ()):
                    log(line)
        todo = []
        if busy and not wait:
            holders = sorted({str(lock_holder(s.run_dir(root)) or "?") for s in busy})
            counts["elsewhere"] = len(busy)
            log(f"left {len(busy)} run{'s' * (len(busy) > 1)} to the process{'es' * (len(holders) > 1)} that "
                f"hold{'s' * (len(holders) == 1)} {'them' if len(busy) > 1 else 'it'} (pid{'s' * (len(holders) > 1)} "
                f"{', '.join(holders)}, on "
                "this machine or another that shares ROOT; no waiting)")
            busy = []
        for spec, holder in _wait_for_others(busy, root, poll, log):
            if not is_complete(spec.run_dir(root)):
                todo.append(spec)  # the other runner stopped without finishing it: train it here
                continue
            done += 1
            store.try_index(spec.run_dir(root))
            counts["completed"] += 1
            log(f"[{done}/{total}] {spec.id} finished by process {holder or '?'} "
                f"({time.perf_counter() - started:.0f} s elapsed)")
    if counts["failed"]:
        log(f"{counts['failed']} run{'s' * (counts['failed'] > 1)} failed; see study.json in "
            f"{'their run directories' if counts['failed'] > 1 else 'its run directory'}. "
            f"`{study.command('run', root)}{' --db ' + shlex.quote(str(db)) if db else ''}` retries "
            f"{'them' if counts['failed'] > 1 else 'it'}.")
    return counts


def _wait_for_others(busy: list[RunSpec], root: Path, poll: float, log) -> Iterator[tuple[RunSpec, int | None]]:
    """Each run another process holds, with that process's id, once the process lets go of it."""
    if busy:
        holders = sorted({str(lock_holder(s.run_dir(root)) or "?") for s in busy})
        log(f"waiting for {len(busy)} run(s) that process {', '.join(holders)} is training")
    for spec in busy:
        holder = lock_holder(spec.run_dir(root))
        while is_locked(spec.run_dir(root)):
            time.sleep(poll)
        yield spec, holder
