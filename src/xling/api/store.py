"""`xling.Store`: the results store of a root's runs (SQLite), read as rows."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import XlingError, briefly
from .checks import check_arguments
from .scores import rows_or_frame

# The columns of the store that hold JSON, read back as Python values
_JSON = ("dims", "config", "data_epochs", "valid")


# What `Store` lets a statement do: select, read, call functions, recurse, and read the schema by pragma
_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_READ_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "foreign_key_list"}


def _only_reads(action: int, arg1, *_) -> int:
    """The SQLite authorizer of `Store`'s connections."""
    reading = action in _READS or (action == sqlite3.SQLITE_PRAGMA and arg1 in _READ_PRAGMAS)
    return sqlite3.SQLITE_OK if reading else sqlite3.SQLITE_DENY


class Store:
    """The results store: one SQLite file that indexes the runs under a root, across studies (`xling study run`
    writes it as runs finish; `xling store rebuild` rebuilds it from the run directories, and is how runs of
    `xling train` get in). Only read here: nothing is written, and a store another process writes is read as it is.

    `root`: the directory of run directories (default $XLING_RUNS or ./runs); `db`: the store file (default
    ROOT/xling.db).

        store = xling.Store()
        store.evaluations(study="table1-cpu", frame=True)   # one row per run and language: ppl, tokens, ...
        store.query("SELECT study, COUNT(*) AS n FROM runs GROUP BY study")
    """

    def __init__(self, root: str | os.PathLike | None = None, db: str | os.PathLike | None = None) -> None:
        check_arguments(root=(root, (str, os.PathLike, type(None))), db=(db, (str, os.PathLike, type(None))))
        if db is None:
            from ..study.spec import runs_root
            from ..study.store import STORE_NAME

            db = runs_root(root) / STORE_NAME
        self.path = Path(db).absolute()
        """The store's file."""
        from ..study.store import refuse_link

        refuse_link(self.path)  # (as `xling report` would: the store read is the root's own, not one elsewhere)
        if not self.path.is_file():
            raise XlingError(f"no results store at {self.path}: `xling study run` writes one as runs finish, "
                             "`xling store rebuild --root ROOT` builds one from the run directories")

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def query(self, sql: str, params: tuple | dict = (), frame: bool = False) -> Any:
        """The rows of one read-only SQL statement (tables runs, metrics and evaluations: README, "The results
        store"), as dicts or a pandas DataFrame with `frame`. A statement that would write anywhere is refused."""
        check_arguments(sql=(sql, str), params=(params, (tuple, list, dict)))
        rows, columns = self._execute(sql, params)
        return rows_or_frame(rows, frame, columns)

    def _execute(self, sql: str, params: tuple | list | dict = ()) -> tuple[list[dict], list[str]]:
        """The rows of `sql` as dicts, and its columns (a frame of no rows has them)."""
        try:
            with contextlib.closing(self._connect()) as db:
                cursor = db.execute(sql, params)
                return [dict(r) for r in cursor.fetchall()], [d[0] for d in cursor.description or ()]
        except sqlite3.Error as exc:
            refused = any(word in str(exc) for word in ("authoriz", "readonly"))
            raise XlingError(f"results store {self.path}: {exc}" + (" (xling.Store only reads)" if refused else "")) from None

    def _connect(self) -> sqlite3.Connection:
        """A read-only connection that only reads: mode=ro keeps the store's file as it is, and the authorizer refuses
        what would write elsewhere (VACUUM INTO, ATTACH, temporary tables). A store in a directory this user cannot
        write (a colleague's root) is opened immutable where no writer has a log (-wal) open: reading a WAL store
        otherwise needs its -shm file created beside it."""
        uri = self.path.as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        except sqlite3.OperationalError:
            db.close()
            if Path(f"{self.path}-wal").exists() or os.access(self.path.parent, os.W_OK):
                raise
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True)
        from ..study.store import foreign_object

        try:  # (a view named as a table would feed forged rows, and one of a recursive query never end)
            what = foreign_object(db, self.path)
        except BaseException:
            db.close()
            raise
        if what:
            db.close()
            raise XlingError(f"results store {self.path} {what}: `xling store rebuild --root ROOT` sets it aside and "
                             "builds the store again from the run directories")
        db.row_factory = sqlite3.Row
        db.set_authorizer(_only_reads)
        return db

    def runs(self, study: str | None = None, frame: bool = False) -> Any:
        """One row per run: id (STUDY/RUN; a run outside a study: its path under the root, or its absolute path),
        study, run, group, its grid values (``languages.p``, ``train.seed``, ...), status (as when it was last
        indexed: `Run.status` reads it now), started (its latest attempt), finished, error, run_dir, steps,
        budget_tokens, parameters, data_epochs (passes over each language's text), the last logged step, final_loss
        and tokens_per_s, the final validation (valid: {language: {ppl, loss, tokens_scored}}) and config (the
        resolved run config, a dict)."""
        rows, columns = self._rows("SELECT r.*, m.step, m.final_loss, m.tokens_per_s, m.valid FROM runs r "
                                   "LEFT JOIN metrics m ON m.run_id = r.id", study, "r.id")
        return rows_or_frame(rows, frame, columns)

    def evaluations(self, study: str | None = None, split: str = "test", frame: bool = False) -> Any:
        """One row per run and language evaluated on `split`: study, run, group, the run's grid values, language,
        ppl, loss, tokens_scored, tokens_trained (the language's training tokens) and fraction_sampled
        (tokens_trained / the run's budget: the share its sampled sequences had, the store's `fraction`; the
        paper credits the expected share, `Study.results`' fraction), status and run_dir."""
        from ..data.corpora import check_split_name

        check_split_name(split)
        rows, columns = self._rows("SELECT r.study, r.name, r.grp, r.dims, r.config, e.language, e.ppl, e.loss, "
                                   "e.tokens_scored, e.tokens_trained, e.fraction AS fraction_sampled, r.status, "
                                   "r.run_dir FROM evaluations e JOIN runs r ON r.id = e.run_id WHERE e.split = :split",
                                   study, "r.id, e.language", split=split)
        for row in rows:
            del row["config"]
        return rows_or_frame(rows, frame, [c for c in columns if c != "config"])

    def _mapping(self, row: dict, column: str, cell: Any) -> dict | None:
        """A JSON column's cell read back: a mapping, or None where empty. Any other cell (a received store's '[1,2]'
        failed with an IndexError, text that is no JSON with a JSONDecodeError) is one XlingError."""
        if cell is None:
            return None
        try:
            value = json.loads(cell) if isinstance(cell, (str, bytes)) else cell
        except (ValueError, RecursionError):  # (not JSON, or nested too deep)
            value = cell
        if isinstance(value, dict):
            return value
        run = row.get("id") or row.get("name")
        raise XlingError(f"results store {self.path}: the {column} of run {run!r} is {briefly(cell)}, not a JSON mapping (the "
                         "store is damaged, or not one xling wrote): rebuild it with `xling store rebuild --root ROOT`")

    def _rows(self, select: str, study: str | None, order: str, **params) -> tuple[list[dict], list[str]]:
        """`select` (of one study, if given) with JSON read back and the grid values as columns: every row has every
        grid key of the rows (its own value where its group sets none, from its config), as `Study.results`; and the
        columns without grid values (a frame of no rows has them)."""
        from ..notation import dotted_get

        check_arguments(study=(study, (str, type(None))))
        if study is not None:
            select += (" AND " if " WHERE " in select else " WHERE ") + "r.study = :study"
        found, names = self._execute(f"{select} ORDER BY {order}", {**params, "study": study})
        rows = [{k: self._mapping(row, k, v) if k in _JSON else v for k, v in row.items()} for row in found]
        grid = list(dict.fromkeys(k for row in rows for k in row["dims"] or {}))
        out = []
        for row in rows:
            dims, config = row.pop("dims") or {}, row.get("config") or {}
            first = {"study": row.pop("study"), "run": row.pop("name"), "group": row.pop("grp")}
            values = {k: dims[k] if k in dims else dotted_get(config, k) for k in grid}
            out.append({**({"id": row.pop("id")} if "id" in row else {}), **first, **values, **row})
        renamed = {"name": "run", "grp": "group"}
        columns = [*(["id"] if "id" in names else []), "study", "run", "group",
                   *(renamed.get(n, n) for n in names if n not in ("id", "study", "name", "grp", "dims"))]
        return out, columns
