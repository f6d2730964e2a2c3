"""The SQLite results store: live indexing equals a rebuild, concurrent writers, optional exports."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import sqlite3

import pytest

import xling
from test_study import completed_study
from xling.cli import main
from xling.errors import XlingError, warnings_to_stderr
from xling.study.exports import export_run
from xling.study.state import is_complete, study_status
from xling.study.store import Store


@pytest.fixture
def tiny_study(tmp_path_factory, tiny_corpus_dir):
    """The tiny study of test_study.py, run once per session."""
    return completed_study(tmp_path_factory, tiny_corpus_dir)


def test_rebuild_from_run_directories_equals_the_live_store(tiny_study, tmp_path):
    study, root = tiny_study
    live = Store(root / "xling.db").dump()
    assert len(live["runs"]) == len(study.runs) and all(r["status"] == "completed" for r in live["runs"])
    rebuilt = Store(tmp_path / "rebuilt.db")
    assert rebuilt.rebuild(root) == len(study.runs)
    assert rebuilt.dump() == live
    assert main(["store", "rebuild", "--root", str(root), "--db", str(tmp_path / "cli.db")]) == 0
    assert Store(tmp_path / "cli.db").dump() == live


def test_a_run_trained_without_its_test_evaluation_is_trained_not_interrupted(tiny_study, tmp_path):
    import shutil

    from xling.study.state import run_state
    from xling.train.rundir import RunDir

    study, root = tiny_study
    run = tmp_path / "run"
    shutil.copytree(study.runs[0].run_dir(root), run)
    assert run_state(run) == "completed"
    RunDir(run).eval_path().unlink()  # as `xling train --no-eval` leaves it
    assert run_state(run) == "trained"
    Store(tmp_path / "x.db").rebuild(tmp_path)
    assert [r["status"] for r in Store(tmp_path / "x.db").dump()["runs"]] == ["trained"]
    RunDir(run).update_info(status="running")  # as a kill -9 leaves run.json: no process holds its lock
    assert run_state(run) == "interrupted" and xling.Run(run).status == "interrupted"


def test_runs_of_one_name_in_two_folders_are_two_runs(tiny_study, tmp_path):
    import shutil

    study, root = tiny_study
    for folder in ("a", "b"):  # runs of `xling train`, not of a study: known by their path under the root
        shutil.copytree(study.runs[0].run_dir(root), tmp_path / folder / "mix-0.1")
        (tmp_path / folder / "mix-0.1" / "study.json").unlink()
    store = Store(tmp_path / "x.db")
    assert store.rebuild(tmp_path) == 2
    assert sorted(r["id"] for r in store.dump()["runs"]) == ["a/mix-0.1", "b/mix-0.1"]


def test_an_evaluation_under_another_protocol_is_kept_out_of_the_store(tiny_study, tmp_path, caplog):
    """An eval.json scored with another max_tokens (as `xling eval --max-tokens` wrote it before such files were
    kept apart) would compare runs scored differently."""
    import shutil

    study, root = tiny_study
    run = tmp_path / "run"
    shutil.copytree(study.runs[0].run_dir(root), run)
    report = json.loads((run / "eval.json").read_text())
    report["max_tokens"] += 1
    (run / "eval.json").write_text(json.dumps(report))
    store = Store(tmp_path / "x.db")
    store.rebuild(tmp_path)
    assert not store.dump()["evaluations"] and "left out of the results store" in caplog.text
    from xling.study.state import is_complete

    assert not is_complete(run)  # so `xling study run` evaluates it again, the run's way


def test_store_rows_hold_config_dims_and_per_language_results(tiny_study):
    study, root = tiny_study
    store = Store(root / "xling.db")
    runs = {r["name"]: r for r in store.runs(study.name)}
    spec = next(r for r in study.runs if r.group == "mix" and r.dims["languages.p"] == 0.1)
    row = runs[spec.id]
    assert json.loads(row["config"]) == spec.config and json.loads(row["dims"]) == spec.dims
    assert row["started"] and row["finished"] and row["grp"] == "mix"
    evals = {e["language"]: e for e in store.evaluations(study.name) if e["run_id"] == row["id"]}
    info = json.loads((spec.run_dir(root) / "run.json").read_text())
    for lang, e in evals.items():
        assert e["tokens_trained"] == info["tokens"][lang]
        assert e["fraction"] == pytest.approx(info["tokens"][lang] / info["budget_tokens"])
        assert e["ppl"] > 1
    assert evals["L2"]["fraction"] < evals["L1"]["fraction"]  # 90/10
    metrics = store.query("SELECT * FROM metrics WHERE run_id = ?", (row["id"],))[0]
    assert metrics["step"] == info["steps"] and metrics["tokens_per_s"] > 0


def _hammer(db_path: str, run_dirs: list[str], rounds: int) -> None:
    store = Store(db_path)
    for _ in range(rounds):
        for d in run_dirs:
            store.index_run(d)


def test_concurrent_writers_do_not_corrupt_the_store(tiny_study, tmp_path):
    study, root = tiny_study
    dirs = [str(r.run_dir(root)) for r in study.runs]
    db = str(tmp_path / "shared.db")
    Store(db).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(db, dirs, 3)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == len(dirs)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("logger, module, out", [("tensorboard", "tensorboard", "tensorboard"), ("wandb", "wandb", "wandb")])
def test_optional_exports_write_files_or_skip_with_a_note(tiny_study, logger, module, out):
    study, root = tiny_study
    run_dir = study.runs[0].run_dir(root)
    try:
        __import__(module)
        installed = True
    except ImportError:
        installed = False
    note = export_run(run_dir, logger)
    if installed:
        assert note == "" and any((run_dir / out).rglob("*"))
    else:
        assert "skipped" in note and f"xling[{logger}]" in note and not (run_dir / out).exists()


def test_a_damaged_store_is_set_aside_and_rebuilt(tiny_study, tmp_path, capsys):
    study, root = tiny_study
    live = Store(root / "xling.db").dump()
    damaged = tmp_path / "xling.db"
    damaged.write_bytes(b"SQLite format 3\0" + b"\xff" * 4096)  # a header, then garbage
    warnings_to_stderr()  # as the CLI shows the library's warnings
    store = Store(damaged)
    assert "is damaged" in capsys.readouterr().err
    assert (tmp_path / "xling.db.damaged").is_file()
    assert store.rebuild(root) == len(study.runs)
    assert store.dump() == live
    # its very header damaged: a runs root's own store (xling.db) is set aside too, beside the earlier one (it was
    # refused as another program's file, by every command, `xling store rebuild` included)
    store.db.close()
    damaged.write_bytes(b"\0" * 100)
    store = Store(damaged)
    assert (tmp_path / "xling.db.damaged-2").read_bytes() == b"\0" * 100
    assert (tmp_path / "xling.db.damaged").read_bytes().startswith(b"SQLite format 3\0\xff")
    assert store.rebuild(root) == len(study.runs) and store.dump() == live
    other = tmp_path / "mine.db"
    other.write_bytes(b"\0" * 100)
    with pytest.raises(XlingError, match="is not an SQLite file, so not a results store"):  # a file of another name
        Store(other)


def test_is_locked_only_looks(tmp_path):
    from xling.train.lock import is_locked, lock_holder, run_lock

    run = tmp_path / "run"
    assert not is_locked(run)  # no lock file yet
    with run_lock(run) as got:
        assert got and is_locked(run) and lock_holder(run) == os.getpid()
    (run / ".lock").write_text("4242\n")  # the last holder's pid stays as it was: looking does not lock
    os.chmod(run / ".lock", 0o444)
    assert not is_locked(run) and lock_holder(run) == 4242
    # a received run's .lock as a FIFO, or linked to one: looking neither hangs (it waited for a writer) nor follows
    from xling.train.lock import lock_state

    os.mkfifo(tmp_path / "fifo")
    for make in (lambda lock: os.mkfifo(lock), lambda lock: lock.symlink_to(tmp_path / "fifo")):
        (run / ".lock").unlink()
        make(run / ".lock")
        assert lock_state(run) is None


def test_json_nested_too_deep_is_a_damaged_file_not_a_traceback(tmp_path):
    from xling.errors import XlingError
    from xling.fsio import read_json

    (tmp_path / "run.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert read_json(tmp_path / "run.json", default={}) == {}
    with pytest.raises(XlingError, match=r"cannot read .*run\.json"):
        read_json(tmp_path / "run.json")


@pytest.mark.parametrize("damage", ["config", "nan"])
def test_a_run_damaged_after_it_was_indexed_leaves_the_store(tiny_study, tmp_path, caplog, damage):
    """A study's run indexed, then its config.yaml damaged (its results came from study.json's config, so it stayed
    a result) or its perplexities made nan over scored tokens (broke the report): skipped, and its old rows go."""
    import shutil

    study, root = tiny_study
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    store = Store(tmp_path / "x.db")
    assert store.rebuild(copy) == len(study.runs)
    run = study.runs[0].run_dir(copy)
    if damage == "config":
        (run / "config.yaml").write_bytes(b"\x00\xff" * 100)
    else:
        report = json.loads((run / "eval.json").read_text())
        report["languages"] = {k: {**v, "ppl": float("nan")} for k, v in report["languages"].items()}
        (run / "eval.json").write_text(json.dumps(report))
    store.sync(study, copy)
    assert f"skipped {run}" in caplog.text
    assert {r["name"] for r in store.runs()} == {spec.id for spec in study.runs[1:]}
    assert not {e["run_id"] for e in store.evaluations()} & {f"{study.name}/{study.runs[0].id}"}


@pytest.mark.parametrize("ppl, language", [("abc", "L1"), (-5, "L1"), (0.5, "L1"), (30.0, "../../x")])
def test_a_damaged_or_crafted_evaluation_is_reported_and_its_run_skipped(tiny_study, tmp_path, caplog, ppl, language):
    import shutil

    study, root = tiny_study
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    damaged = study.runs[0].run_dir(copy) / "eval.json"
    report = json.loads(damaged.read_text())
    report["languages"] = {language: {**next(iter(report["languages"].values())), "ppl": ppl}}
    damaged.write_text(json.dumps(report))
    store = Store(tmp_path / "x.db")
    assert store.rebuild(copy) == len(study.runs) - 1
    assert f"skipped {damaged.parent}" in caplog.text
    states = [row["state"] for row in study_status(study, copy)]  # `xling study status` says so too
    assert states == ["damaged"] + ["completed"] * (len(study.runs) - 1)
    assert not is_complete(damaged.parent)  # `xling study run` scores it again


def test_a_store_that_is_a_symbolic_link_is_refused_and_nothing_written(tiny_study, tmp_path, capsys):
    """A received root's xling.db linked out of it: SQLite followed the link, so a rebuild emptied and refilled the
    store it pointed at (or made a new file there)."""
    import shutil

    _, root = tiny_study
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(root / "xling.db", elsewhere / "other.db")
    before = (elsewhere / "other.db").read_bytes()
    for target in (elsewhere / "other.db", elsewhere / "new.db"):  # an existing store, and a dangling link
        (copy / "xling.db").unlink()
        (copy / "xling.db").symlink_to(target)
        with pytest.raises(XlingError, match=r"is a symbolic link .* remove the link"):
            Store(copy / "xling.db")
        assert main(["store", "rebuild", "--root", str(copy)]) == 2
        assert "symbolic link" in capsys.readouterr().err
        with pytest.raises(XlingError, match="is a symbolic link"):
            xling.Store(copy)
        assert sorted(p.name for p in elsewhere.iterdir()) == ["other.db"]
        assert (elsewhere / "other.db").read_bytes() == before


@pytest.mark.parametrize("sql", [
    "CREATE TRIGGER forge AFTER INSERT ON evaluations BEGIN UPDATE evaluations SET ppl = 1.0001; END",
    "CREATE VIEW best AS SELECT * FROM evaluations",
    "CREATE UNIQUE INDEX by_ppl ON evaluations (language)",  # (REPLACE would delete every other language's rows)
    "CREATE INDEX by_ppl ON runs (json_extract(config, '$['))",  # (an expression: every insert would fail)
    "CREATE INDEX by_ppl ON evaluations (ppl) WHERE ppl > 1",
])
def test_a_store_holding_what_xling_does_not_make_is_set_aside_before_any_write(tiny_study, tmp_path, capsys, sql):
    """A received xling.db with a trigger: every number a rebuild wrote was forged (the tables were compared, not
    the rest of the schema). Such a store is set aside like a damaged one, before any statement runs on it; a file
    of another name holding one is refused."""
    import shutil

    _, root = tiny_study
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    (copy / "xling.db").unlink()
    assert main(["store", "rebuild", "--root", str(copy), "--db", str(tmp_path / "truth.db")]) == 0
    truth = Store(tmp_path / "truth.db").dump()
    for path in (copy / "xling.db", tmp_path / "mine.db"):
        db, copied = sqlite3.connect(tmp_path / "truth.db"), sqlite3.connect(path)
        db.backup(copied)
        if "INDEX" in sql:  # (made on the received store before its rows: they would not fit it)
            copied.executescript("DELETE FROM metrics; DELETE FROM evaluations; DELETE FROM runs;")
        copied.execute(sql)
        db.close(), copied.close()
    before = (tmp_path / "mine.db").read_bytes()
    with pytest.raises(XlingError, match="that xling does not make, so it is not a results store xling wrote"):
        Store(tmp_path / "mine.db")
    assert (tmp_path / "mine.db").read_bytes() == before
    capsys.readouterr()
    assert main(["store", "rebuild", "--root", str(copy)]) == 0
    assert "that xling does not make (kept as xling.db.damaged)" in capsys.readouterr().err
    assert (copy / "xling.db.damaged").is_file()
    with sqlite3.connect(copy / "xling.db") as db:
        assert not db.execute("SELECT name FROM sqlite_master WHERE name IN ('forge', 'best', 'by_ppl')").fetchall()
    assert Store(copy / "xling.db").dump() == truth


def test_the_python_api_reads_no_store_holding_what_xling_does_not_make(tiny_study, tmp_path):
    """xling.Store only reads, so it never set such a store aside: a view in place of a table fed it forged rows."""
    _, root = tiny_study
    assert main(["store", "rebuild", "--root", str(root), "--db", str(tmp_path / "x.db")]) == 0
    assert xling.Store(db=tmp_path / "x.db").evaluations()
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db")) as db:
        db.executescript("DROP TABLE evaluations; CREATE VIEW evaluations AS SELECT 1.0001 AS ppl;")
    with pytest.raises(XlingError, match="holds a view 'evaluations' that xling does not make: `xling store rebuild"):
        xling.Store(db=tmp_path / "x.db").evaluations()


def test_a_trigger_named_as_sqlites_own_is_foreign_too(tmp_path):
    """SQLite reserves sqlite_ names only when an object is made: a crafted file renames its trigger."""
    Store(tmp_path / "mine.db").close()
    with contextlib.closing(sqlite3.connect(tmp_path / "mine.db")) as db:
        db.execute("CREATE TRIGGER forge AFTER INSERT ON evaluations BEGIN UPDATE evaluations SET ppl = 1.0001; END")
        db.execute("PRAGMA writable_schema = ON")
        db.execute("UPDATE sqlite_master SET name = 'sqlite_forge', sql = replace(sql, 'forge AFTER', 'sqlite_forge AFTER') "
                   "WHERE name = 'forge'")
        db.commit()
    with pytest.raises(XlingError, match="holds a trigger 'sqlite_forge' that xling does not make"):
        Store(tmp_path / "mine.db")


@pytest.mark.parametrize("sql", ["CREATE INDEX by_ppl ON evaluations (ppl)", "ANALYZE"])
def test_a_users_index_or_sqlites_statistics_keep_the_store(tiny_study, tmp_path, sql):
    """An index made for one's own queries (the README shows sqlite3 on the store) and ANALYZE's sqlite_stat1 change
    no row: the store stays as it is (it was set aside, or refused as someone else's file)."""
    _, root = tiny_study
    assert main(["store", "rebuild", "--root", str(root), "--db", str(tmp_path / "mine.db")]) == 0
    truth = Store(tmp_path / "mine.db").dump()
    with sqlite3.connect(tmp_path / "mine.db") as db:
        db.execute(sql)
    assert Store(tmp_path / "mine.db").dump() == truth and not list(tmp_path.glob("*.damaged*"))


@pytest.mark.parametrize("name, key, value", [
    ("study.json", "started", {"x": 1}),  # was sqlite3.ProgrammingError binding a dict
    ("study.json", "dims", [1, 2]),
    ("eval.json", "tokens_trained", {"L1": "x", "L2": 0}),  # was a TypeError
    ("run.json", "parameters", 2**70),  # was an OverflowError
    ("metrics.jsonl", "loss", {"x": 1}),
])
def test_a_run_whose_files_hold_values_of_the_wrong_kind_is_skipped_as_damaged(tiny_study, tmp_path, caplog,
                                                                              name, key, value):
    """A received run's JSON binds into the store as it is: a mapping where text belongs stopped a rebuild with a
    traceback, the store left with only the runs indexed before it."""
    import shutil

    study, root = tiny_study
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    crafted = study.runs[0].run_dir(copy) / name
    if name == "metrics.jsonl":
        lines = crafted.read_text().splitlines()
        last = max(i for i, line in enumerate(lines) if '"loss"' in line)
        lines[last] = json.dumps({**json.loads(lines[last]), key: value})
        crafted.write_text("\n".join(lines) + "\n")
    else:
        crafted.write_text(json.dumps({**json.loads(crafted.read_text()), key: value}))
    store = Store(tmp_path / "x.db")
    assert store.rebuild(copy) == len(study.runs) - 1
    said = "cannot be read" if key == "dims" else "its "  # (a study.json of other types reads as none: rundir.py)
    assert f"skipped {crafted.parent} in the results store: {crafted}{':' if said == 'its ' else ''} {said}" in caplog.text
    assert {r["name"] for r in store.runs()} == {spec.id for spec in study.runs[1:]}


def test_a_rebuild_stopped_part_way_leaves_the_store_as_it_was(tiny_study, tmp_path, monkeypatch):
    """The old rows were deleted in one transaction and each run indexed in its own: an error part-way (a crafted
    file's, before they were checked) left only the runs indexed so far."""
    import xling.study.store as store_module

    study, root = tiny_study
    store = Store(tmp_path / "x.db")
    assert store.rebuild(root) == len(study.runs)
    before = store.dump()
    for name in ("run_rows", "_insert"):  # something unforeseen while the runs are read, or written
        with monkeypatch.context() as patch:
            patch.setattr(store_module, name, _failing_after(getattr(store_module, name), 3))
            with pytest.raises(RuntimeError, match="unforeseen"):
                store.rebuild(root)
        assert store.dump() == before


def _failing_after(function, n: int):
    """`function`, raising from its call n + 1 on."""
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) > n:
            raise RuntimeError("unforeseen")
        return function(*args)
    return failing


@pytest.mark.parametrize("column, cell", [("dims", "[1,2]"), ("config", "{not json"), ("dims", 5), ("config", "[" * 10**5)])
def test_a_received_stores_cells_are_one_error_from_the_python_api(tiny_study, tmp_path, column, cell):
    """xling.Store reads what a store holds: dims '[1,2]' failed with an IndexError, a cell that is no JSON with a
    JSONDecodeError."""
    study, root = tiny_study
    Store(tmp_path / "x.db").rebuild(root)
    with sqlite3.connect(tmp_path / "x.db") as db:
        db.execute(f"UPDATE runs SET {column} = ? WHERE name = ?", (cell, study.runs[0].id))
    store = xling.Store(root, db=tmp_path / "x.db")
    for rows in (store.runs, store.evaluations):
        with pytest.raises(XlingError, match=rf"the {column} of run '.*{study.runs[0].id}' is .*, not a JSON mapping"):
            rows()
