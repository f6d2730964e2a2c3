"""The results store: an SQLite index of runs, their metrics and their evaluations.

The run directories are the truth; the store is an index over them for queries and reports.
`index_run` reads one run directory and replaces its rows, so the live store (indexed as runs
finish) and a store rebuilt from the directories (`xling store rebuild`) are the same by
construction. WAL mode and a busy timeout let several processes write without corrupting it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import re
import sqlite3
from pathlib import Path

from ..config import to_dict
from ..errors import XlingError, briefly
from ..fsio import make_dirs
from ..train.rundir import PROTOCOL, RunDir
from .spec import Study
from .state import any_run_state, check_run_files

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,          -- STUDY/RUN_ID (or the directory name for runs outside a study)
    study TEXT, name TEXT, grp TEXT,
    dims TEXT,                    -- JSON: the run's grid values
    config TEXT,                  -- JSON: the full resolved run config
    status TEXT,                  -- pending | running | interrupted | failed | trained | completed
    started TEXT, finished TEXT, error TEXT,
    run_dir TEXT,
    steps INTEGER, budget_tokens INTEGER, parameters INTEGER,
    data_epochs TEXT              -- JSON: passes over each language's training text (> 1: repeated data)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER, final_loss REAL, tokens_per_s REAL,
    valid TEXT                    -- JSON: final validation {language: {loss, ppl, tokens_scored}}
);
CREATE TABLE IF NOT EXISTS evaluations (
    run_id TEXT REFERENCES runs(id) ON DELETE CASCADE,
    language TEXT, split TEXT,
    ppl REAL, loss REAL, tokens_scored INTEGER,
    tokens_trained INTEGER,       -- training tokens this language received
    fraction REAL,                -- tokens_trained / the run's reference budget T (the sampled share, not p)
    PRIMARY KEY (run_id, language, split)
);
"""


_KINDS = {"text": (str,), "a mapping": (dict,), "a number": (int, float), "a count": (int,)}


def _field(path: Path, data: dict, key: str, kind: str, default=None, label: str = ""):
    """data[key] (`default` where it is missing or null), checked to be of `kind`: what a run's files hold is bound
    into SQL as it is, so a received file's mapping where text belongs stopped a rebuild part-way with a traceback."""
    value = data.get(key)
    if value is None:
        return default
    of_kind = isinstance(value, _KINDS[kind]) and not isinstance(value, bool) and not (kind == "a count" and value < 0)
    too_big = isinstance(value, int) and not -2**63 <= value < 2**63  # (SQLite's integers are 64-bit)
    if not of_kind or too_big:
        why = "beyond the 64-bit integers SQLite stores" if of_kind else f"not {kind}"
        raise XlingError(f"{path}: its {label or key} is {briefly(value)}, {why}")
    return value


def _run_id(run_dir: Path, root: Path | None) -> tuple[str, str, str]:
    """(id, study, name) of a run directory in the store: STUDY/ID for a study's run; another by its path under
    `root` (or its absolute path)."""
    rundir = RunDir(run_dir)
    rec, where = rundir.read_study_record(), rundir.study_record_path
    inside = root is not None and run_dir.resolve().is_relative_to(Path(root).resolve())
    path = run_dir.resolve().relative_to(Path(root).resolve()).as_posix() if inside else str(run_dir.resolve())
    study, name = _field(where, rec, "study", "text", ""), _field(where, rec, "id", "text", path)
    return (f"{study}/{name}" if study else name), study, name


def run_rows(run_dir: Path, root: Path | None = None) -> tuple[dict, dict | None, list[dict]]:
    """(runs row, metrics row or None, evaluation rows) of one run directory: a pure read of its files, each value
    checked to be of its column's kind (an XlingError naming the file where one is not). A study's run is known as
    STUDY/ID; another run by its path under `root` (or its absolute path): two runs of one name in different folders
    are two runs."""
    run_dir = Path(run_dir)
    rundir = RunDir(run_dir)
    check_run_files(run_dir)  # a damaged config.yaml or eval file: skipped (try_index), as `xling status` says damaged
    rec, info = rundir.read_study_record(), rundir.read_info(tolerant=True)
    in_rec = lambda key, kind, default=None: _field(rundir.study_record_path, rec, key, kind, default)
    in_info = lambda key, kind, default=None: _field(rundir.info_path, info, key, kind, default)
    run_id, study, name = _run_id(run_dir, root)
    config = in_rec("config", "a mapping")
    if config is None and rundir.config_path.is_file():
        config = to_dict(rundir.read_config())
    status = any_run_state(run_dir)  # (`xling status`'s: a run outside a study trained with --no-eval is completed)
    run = {
        "id": run_id, "study": study, "name": name, "grp": in_rec("group", "text", ""),
        "dims": json.dumps(in_rec("dims", "a mapping", {})), "config": json.dumps(config or {}), "status": status,
        "started": in_rec("started", "text"), "finished": in_rec("finished", "text"),
        "error": in_rec("error", "text") or (in_info("error", "text", "") if status == "failed" else ""),
        "run_dir": str(run_dir), "steps": info.get("steps"), "budget_tokens": info.get("budget_tokens"),
        "parameters": in_info("parameters", "a count"), "data_epochs": json.dumps(in_info("data_epochs", "a mapping", {})),
    }
    records = rundir.read_metrics()
    train = [r for r in records if "loss" in r]
    metrics = None
    if train:
        logged = lambda r, key, kind: _field(rundir.metrics_path, r, key, kind, label=f"{key} at step {r['step']}")
        rates = [rate for r in train if (rate := logged(r, "tokens_per_s", "a number")) is not None]
        metrics = {"run_id": run["id"], "step": _field(rundir.metrics_path, train[-1], "step", "a count"),
                   "final_loss": logged(train[-1], "loss", "a number"),
                   "tokens_per_s": sum(rates) / len(rates) if rates else None,
                   "valid": json.dumps(in_info("valid", "a mapping", {}))}
    evals = []
    budget = info.get("budget_tokens") or 0
    tokens = in_info("tokens", "a mapping", {})
    for path in rundir.eval_paths():
        report = rundir.read_evaluation(path)
        if report and rundir.config_path.is_file() and not rundir.scored_as_configured(report):
            protocol = {k: report.get(k) for k in PROTOCOL}  # as `xling eval --max-tokens` wrote it before 2026-11-28
            log.warning(f"{path} was scored with {protocol}, not the run's eval section: left out of the results "
                        f"store (`xling eval {run_dir}` or `xling study run` scores it the run's way)")
            continue
        # the tokens of the checkpoint evaluated (an earlier one's when the newest did not verify); older files: run.json's
        trained_at = _field(path, report, "tokens_trained", "a mapping", tokens) if "tokens_trained" in report else tokens
        where = path if "tokens_trained" in report else rundir.info_path
        split = _field(path, report, "split", "text", "test")
        for lang, r in (report.get("languages") or {}).items():
            whose = f"{'tokens_trained' if where == path else 'tokens'} of {lang}"
            trained = _field(where, trained_at, lang, "a count", label=whose)
            evals.append({"run_id": run["id"], "language": lang, "split": split, "ppl": r.get("ppl"),
                          "loss": _field(path, r, "loss", "a number", label=f"{lang} loss"),
                          "tokens_scored": _field(path, r, "tokens_scored", "a count", label=f"{lang} tokens_scored"),
                          "tokens_trained": trained, "fraction": trained / budget if budget and trained is not None else None})
    return run, metrics, evals


def _insert(db: sqlite3.Connection, table: str, row: dict) -> None:
    cols = ", ".join(row)
    db.execute(f"INSERT OR REPLACE INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))


def _quoted(name: str) -> str:
    """An SQL identifier, quoted (a received store's names are any text)."""
    return '"' + name.replace('"', '""') + '"'


_SQLITE_TABLES = ("sqlite_stat1", "sqlite_stat4", "sqlite_sequence")  # what ANALYZE and AUTOINCREMENT make


def _plain_index(db: sqlite3.Connection, name: str, tables: dict[str, list[str]]) -> bool:
    """Whether an index is one a user may add for their queries: on a table of ours, of its columns only, neither
    unique (REPLACE would delete rows) nor partial nor of expressions (which can fail every insert)."""
    table = db.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)).fetchone()
    if not table or table[0] not in tables:
        return False
    listed = next((r for r in db.execute(f"PRAGMA index_list({_quoted(table[0])})") if r[1] == name), None)
    keys = [r for r in db.execute(f"PRAGMA index_xinfo({_quoted(name)})") if r[5]]  # (the key columns)
    return bool(listed) and not listed[2] and not listed[4] and all(r[1] >= 0 for r in keys)


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({_quoted(table)})")]


def _schema(db: sqlite3.Connection) -> dict[tuple[str, str], str | None]:
    """{(type, name): its SQL} of every table, index, view and trigger of a database, the SQL without comments or
    runs of white space (what differs between versions of SCHEMA that make the same store)."""
    rows = db.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return {(t, n): " ".join(re.sub(r"--[^\n]*", "", sql).split()) if sql else sql for t, n, sql in rows}


@functools.cache
def _ours() -> tuple[dict, dict[str, list[str]]]:
    """The schema xling makes (`_schema`), and the columns of each of its tables."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.executescript(SCHEMA)
        schema = _schema(db)
        return schema, {name: _columns(db, name) for kind, name in schema if kind == "table"}


def foreign_object(db: sqlite3.Connection, path: Path) -> str:
    """What a store holds that xling does not make, in words ("holds a trigger 'x' that xling does not make"), or "":
    a trigger (it would follow every write: forge numbers, or never end), a view, an index that can delete or refuse
    rows, or a table of ours made otherwise. A table with columns of its own is someone else's data: refused."""
    ours, columns = _ours()
    # SQLite's own statistics and a user's plain indexes for their queries change no row: not foreign
    sqlites = {("table", name) for name in _SQLITE_TABLES}
    found = {key: sql for key, sql in _schema(db).items() if key not in sqlites
             and not (key[0] == "index" and key not in ours and _plain_index(db, key[1], columns))}
    for kind, name in found:
        if kind == "table" and _columns(db, name) != columns.get(name, []):
            raise XlingError(f"{path} is an SQLite database with a table '{name}' of its own, not an xling results "
                             "store: give another --db")
    kind, name = next((key for key, sql in found.items() if ours.get(key, "") != sql), ("", ""))
    return f"holds {'an' if kind[:1] == 'i' else 'a'} {kind} '{name}' that xling does not make" if kind else ""


SQLITE_HEADER = b"SQLite format 3\0"
STORE_NAME = "xling.db"  # a runs root's own store: one of that name that is no SQLite file is ours, damaged


def _free_name(path: Path) -> Path:
    """`path`, or the first of path-2, path-3, ... that does not exist."""
    names = (path if n == 1 else path.with_name(f"{path.name}-{n}") for n in itertools.count(1))
    return next(name for name in names if not name.exists())


def refuse_link(path: Path) -> None:
    """Refuse a store that is a symbolic link: SQLite follows it, so a received root's xling.db linked elsewhere
    would have the store written (emptied, refilled) wherever it points."""
    if path.is_symlink():
        raise XlingError(f"the results store {path} is a symbolic link (to {os.readlink(path)}), which xling does not "
                         "follow: remove the link (a runs root's store is rebuilt from its run directories), or give "
                         "--db (from Python: db=) the file itself")


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        foreign = self._check_is_ours()
        make_dirs(self.path.parent)
        if foreign:
            self._set_aside(foreign)
        try:
            self._open()
            healthy = self.db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            # again as opened to write (its -wal read too), before any statement that a trigger could follow
            foreign = self._foreign(self.db) if healthy else ""
        except sqlite3.OperationalError as exc:  # cannot open, read-only, locked: not damage, nothing to set aside
            if hasattr(self, "db"):
                self.db.close()
            raise XlingError(f"cannot use the results store {self.path} ({exc}): give --db (from Python: db=) a "
                             "writable file") from None
        except sqlite3.DatabaseError:
            healthy = False
        except XlingError:
            self.db.close()
            raise
        if not healthy or foreign:  # the store is only an index: set the file aside and start afresh
            self.db.close()
            self._set_aside(foreign or "is damaged")
            self._open()

    def _set_aside(self, why: str) -> None:
        """Keep a runs root's own store that is damaged (or not xling's alone) under a free name."""
        damaged = _free_name(self.path.with_name(self.path.name + ".damaged"))  # (an earlier one is kept)
        os.replace(self.path, damaged)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        log.warning(f"results store {self.path} {why} (kept as {damaged.name}); it is rebuilt from "
                    "the run directories (all studies: xling store rebuild)")

    def _check_is_ours(self) -> str:
        """Refuse a path that is not a results store before anything writes to it: a link, a directory, a file
        that is not SQLite, or an SQLite database with tables of its own (someone else's data). Returns why a runs
        root's own store is set aside before it is opened (`_foreign`), or ""."""
        refuse_link(self.path)
        if self.path.is_dir():
            raise XlingError(f"--db {self.path} is a directory: give the path of a results store file (xling.db)")
        if not self.path.is_file() or not self.path.stat().st_size:
            return ""
        with open(self.path, "rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                if self.path.name == STORE_NAME:  # its header damaged: set aside and rebuilt below
                    return ""
                raise XlingError(f"{self.path} is not an SQLite file, so not a results store: give another --db")
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
                return self._foreign(db)
        except sqlite3.DatabaseError:
            return ""  # a damaged store of ours: set aside and rebuilt below

    def _foreign(self, db: sqlite3.Connection) -> str:
        """Why a store whose schema holds what xling does not make is set aside, or "" (`foreign_object`); any such
        object in a file not named xling.db is someone else's file: refused."""
        what = foreign_object(db, self.path)
        if what and self.path.name != STORE_NAME:
            raise XlingError(f"{self.path} {what}, so it is not a results store xling wrote: give another --db")
        return what

    def _open(self) -> None:
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)  # explicit transactions below
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 60000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _transaction(self):
        return _Transaction(self.db)

    def index_run(self, run_dir: str | Path, root: str | Path | None = None) -> str:
        """Replace the rows of one run directory with what its files say now; returns its id (see run_rows)."""
        rows = run_rows(Path(run_dir), root)
        with self._transaction():
            self._write(*rows)
        return rows[0]["id"]

    def _write(self, run: dict, metrics: dict | None, evals: list[dict]) -> None:
        """One run's rows in place of its old ones (in a transaction)."""
        self.db.execute("DELETE FROM runs WHERE id = ?", (run["id"],))
        _insert(self.db, "runs", run)
        if metrics:
            _insert(self.db, "metrics", metrics)
        for row in evals:
            _insert(self.db, "evaluations", row)

    def _rows_or_skip(self, run_dir: str | Path, root: str | Path | None) -> tuple | None:
        """run_rows, or None where the run directory's files cannot be read: reported, and skipped (one damaged run
        never stops the indexing of the others)."""
        try:
            return run_rows(Path(run_dir), root)
        except (XlingError, OSError, ValueError) as exc:  # e.g. a config this version cannot read
            log.warning(f"skipped {run_dir} in the results store: {exc}")
            return None

    def try_index(self, run_dir: str | Path, root: str | Path | None = None) -> bool:
        """index_run, but a run directory whose files cannot be read is reported and skipped: one
        damaged run never stops the indexing of the others."""
        rows = self._rows_or_skip(run_dir, root)
        if rows is None:
            with contextlib.suppress(XlingError):  # (a study.json whose id is no text names none)
                run_id = _run_id(Path(run_dir), root)[0]
                with self._transaction():  # what it said before it was damaged is no result now
                    self.db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            return False
        with self._transaction():
            self._write(*rows)
        return True

    def sync(self, study: Study, root: str | Path) -> None:
        """Index every existing run directory of a study (cheap; keeps the store current)."""
        for spec in study.runs:
            if spec.run_dir(root).is_dir():
                self.try_index(spec.run_dir(root))

    def rebuild(self, root: str | Path) -> int:
        """Drop everything and index every run directory under `root`; returns how many were indexed. The files are
        read first, then everything is replaced in one transaction: a rebuild stopped part-way (an error, a kill)
        leaves the store as it was, never half rebuilt."""
        markers = (RunDir(root).study_record_path.name, RunDir(root).config_path.name)  # what makes a run directory
        dirs = sorted({p.parent for name in markers for p in Path(root).rglob(name)})
        found = [rows for d in dirs if (rows := self._rows_or_skip(d, root)) is not None]
        with self._transaction():
            for table in ("evaluations", "metrics", "runs"):
                self.db.execute(f"DELETE FROM {table}")
            for rows in found:
                self._write(*rows)
        return len(found)

    def query(self, sql: str, params=()) -> list[dict]:
        return [dict(r) for r in self.db.execute(sql, params).fetchall()]

    def runs(self, study: str | None = None) -> list[dict]:
        where, params = ("WHERE study = ?", (study,)) if study is not None else ("", ())
        return self.query(f"SELECT * FROM runs {where} ORDER BY id", params)

    def evaluations(self, study: str | None = None, split: str = "test") -> list[dict]:
        sql = "SELECT e.* FROM evaluations e JOIN runs r ON r.id = e.run_id WHERE e.split = ?"
        params: tuple = (split,)
        if study is not None:
            sql, params = sql + " AND r.study = ?", params + (study,)
        return self.query(sql + " ORDER BY e.run_id, e.language", params)

    def dump(self) -> dict[str, list[dict]]:
        """Every table's rows, sorted: what a rebuilt store is compared with."""
        keys = {"runs": "id", "metrics": "run_id", "evaluations": "run_id, language, split"}
        return {t: self.query(f"SELECT * FROM {t} ORDER BY {k}") for t, k in keys.items()}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): a writer waits for the lock instead of failing midway."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
