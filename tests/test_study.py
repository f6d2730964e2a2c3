"""Studies: expansion into runs, validation, and a runner that skips, resumes, locks and survives kill -9."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config_dict
from xling.cli import main
from xling.cli.tables import status_table
from xling.errors import XlingError
from xling.fsio import read_json
from xling.recipes import packaged
from xling.study.runner import execute_run, run_study
from xling.study.spec import RunSpec, available_studies, build_study, find_study, load_study, runs_root
from xling.study.state import is_complete, study_status
from xling.train.lock import is_locked, lock_holder, run_lock


def read_json_file(path):
    return read_json(path, default={})

OURS = ("headline", "table1", "figure1", "figure2", "figure8", "table3", "figure4")  # the paper's experiments
OURS = tuple(f"{n}-{scale}" for n in OURS for scale in ("cpu", "paper"))


def tiny_study_dict(corpus_dir, name="tiny", seeds=(0, 1), ps=(0.5, 0.1), fractions=(0.1, 0.2, 0.3, 0.4),
                    mix_fraction=0.4) -> dict:
    """A tiny study: a 4-point monolingual ladder plus bilingual runs; each run trains in about a second."""
    base = tiny_config_dict(corpus_dir, train={"steps": 0, "checkpoint_every": 10}, eval={"max_tokens": 1500})
    return {
        "name": name, "description": "a tiny study for tests", "paper": "Table 1", "scale": "test", "base": base,
        "grid": {"train.seed": list(seeds)},
        "groups": {
            "ladder": {"set": {"languages.p": 0.0}, "grid": {"train.data_fraction": list(fractions), "train.seed": [0]}},
            "mix": {"set": {"train.data_fraction": mix_fraction}, "grid": {"languages.p": list(ps)}},
        },
        "figures": [{"x": "languages.p", "y": "ppl", "mlpe": True}, {"x": "languages.p", "y": "teff"}],
        "one_x": mix_fraction,  # the mix runs count as the paper's 1x (for the published numbers)
    }


def write_study(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


_DONE: dict = {}


def completed_study(tmp_path_factory, corpus_dir):
    """A tiny study run to completion once per test session (shared by the store and report tests)."""
    if "study" not in _DONE:
        root = tmp_path_factory.mktemp("study-runs")
        study = build_study(tiny_study_dict(corpus_dir))
        counts = run_study(study, root, log=lambda *_: None)
        assert counts["completed"] == counts["total"]
        _DONE["study"] = (study, root)
    return _DONE["study"]


@pytest.fixture
def tiny_study(tmp_path_factory, tiny_corpus_dir):
    return completed_study(tmp_path_factory, tiny_corpus_dir)


# --------------------------------------------------------------------------- expansion and validation


def test_expansion_crosses_grids_within_groups(tiny_corpus_dir):
    study = build_study(tiny_study_dict(tiny_corpus_dir))
    ladder = [r for r in study.runs if r.group == "ladder"]
    mix = [r for r in study.runs if r.group == "mix"]
    assert len(ladder) == 4 and len(mix) == 4  # ladder overrides the seeds; mix crosses p x seed
    assert all(r.config["languages"]["p"] == 0.0 and r.config["train"]["seed"] == 0 for r in ladder)
    assert sorted((r.dims["languages.p"], r.dims["train.seed"]) for r in mix) == [(0.1, 0), (0.1, 1), (0.5, 0), (0.5, 1)]
    assert all(r.config["train"]["data_fraction"] == 0.4 for r in mix)
    run = next(r for r in mix if r.dims == {"languages.p": 0.1, "train.seed": 1})
    assert run.id.startswith("mix-p0.1-s1-") and len(run.id.split("-")[-1]) == 8
    assert run.setting == "mix: p=0.1"
    assert len({r.id for r in study.runs}) == len(study.runs)


def test_ids_are_stable_and_follow_the_config(tiny_corpus_dir):
    data = tiny_study_dict(tiny_corpus_dir)
    ids = [r.id for r in build_study(data).runs]
    assert ids == [r.id for r in build_study(tiny_study_dict(tiny_corpus_dir)).runs]
    data["base"]["train"]["lr"] = 1e-3  # a base change makes every run new
    changed = [r.id for r in build_study(data).runs]
    assert not set(ids) & set(changed)
    assert [i.rsplit("-", 1)[0] for i in ids] == [i.rsplit("-", 1)[0] for i in changed]  # same readable names
    data = tiny_study_dict(tiny_corpus_dir, fractions=(0.1, 0.2, 0.3, 0.5))  # only one ladder run changes
    assert len(set(ids) - {r.id for r in build_study(data).runs}) == 1
    data = tiny_study_dict(tiny_corpus_dir)  # the base's keys written dotted, as a group's set writes them
    data["base"]["train.lr"] = data["base"]["train"].pop("lr")
    assert [r.id for r in build_study(data).runs] == ids


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["base"]["train"].update(lr_max=1), "lr_max"),
    (lambda d: d["groups"]["mix"]["grid"].update({"languages.p": [0.5, 1.5]}), "languages.p must be in [0, 1]"),
    (lambda d: d["groups"]["mix"].update(grdi={}), "did you mean 'grid'"),
    (lambda d: d["groups"]["mix"]["grid"].update({"languages.p": []}), "non-empty list"),
    (lambda d: d.update(figures=[{"x": "languages.p", "y": "loss"}]), "ppl or teff"),
    (lambda d: d["groups"].update(again=d["groups"]["ladder"]), "same config"),
    (lambda d: d.update(figures=[{"y": "ppl"}]), "needs x"),
    (lambda d: d.update(figures=[{"x": "languages.q"}]), "figures[0].x 'languages.q' is not a key of the study's grids "
                                                         "(did you mean 'languages.p'?)"),
    (lambda d: d["base"]["train"].update(steps=30),  # the ladder's data_fraction is then ignored: one run four times
     "train.data_fraction applies with train.steps 0 (the steps then follow from it): keep one: the grid sets "
     "train.data_fraction, which its runs ignore"),
    (lambda d: d.update(figures=[{"x": "languages.p", "roles": ["L3"]}]), "roles must list L1 and/or L2"),
    (lambda d: d.update(figures=[{"x": "languages.p", "where": {"train.data_fraction": 0.25}}]),  # (left out of the
     "figures[0] selects no run: no run with languages.p in its grid has train.data_fraction = 0.25"),  # report)
    (lambda d: d.update(figures=[{"x": "languages.p", "where": {"train.nothing": 1}}]), "figures[0] selects no run"),
    (lambda d: d.update(name=".."), "'name' must be letters"),
    (lambda d: d.update(name="../up"), "'name' must be letters"),
    (lambda d: d.pop("name"), "study: give the study a name (name: ..."),
    (lambda d: d["base"].update({"train.lr": 0.1}), "study: base gives train.lr twice, nested and as a dotted key"),
    (lambda d: d["base"].update({1.5: 2}), "unknown key '1.5'"),
    (lambda d: d["groups"]["mix"]["set"].update({"languages.p": 0.0}),  # the grid's value won without a word
     "groups.mix sets languages.p and its grid varies it: give it in one of them"),
    (lambda d: d["groups"]["mix"]["set"].update({"train": {"seed": 3}}),
     "groups.mix sets train.seed and the study's grid varies it: to fix it for this group, give it in the group's "
     "grid (train.seed: [VALUE])"),
])
def test_bad_studies_are_one_line_errors(tiny_corpus_dir, mutate, message):
    data = tiny_study_dict(tiny_corpus_dir)
    mutate(data)
    with pytest.raises(XlingError, match=re.escape(message)) as exc:
        build_study(data)
    assert "\n" not in str(exc.value)


def test_cli_bad_study_exits_2_and_writes_nothing(tiny_corpus_dir, tmp_path, capsys):
    data = tiny_study_dict(tiny_corpus_dir)
    data["base"]["model"]["seq_len"] = 16  # eval.window 32 no longer fits
    path = write_study(tmp_path / "bad.yaml", data)
    root = tmp_path / "runs"
    assert main(["study", "run", str(path), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xling: error:") and "eval.window" in err and len(err.strip().splitlines()) == 1
    assert not root.exists()


def test_unknown_study_name_suggests_the_closest(tmp_path, monkeypatch):
    for name in ("table1-cpu", "figure1-cpu"):
        (tmp_path / f"{name}.yaml").write_text("name: x\n")
    monkeypatch.setenv("XLING_STUDIES", str(tmp_path))
    with pytest.raises(XlingError, match=r"did you mean 'table1-cpu'.*available:.*figure1-cpu"):
        find_study("tabel1-cpu")


def test_a_study_found_by_name_must_answer_to_it(tmp_path, monkeypatch, tiny_corpus_dir, capsys):
    """Its runs, its report and every hint go by the name inside the file: one that differs from the file's would send
    `xling study status` to a study no command finds."""
    data = tiny_study_dict(tiny_corpus_dir, name="othername")
    write_study(tmp_path / "mismatch.yaml", data)
    monkeypatch.setenv("XLING_STUDIES", str(tmp_path))
    with pytest.raises(XlingError, match=r"names its study 'othername'.*set name: mismatch"):
        load_study("mismatch")
    assert load_study(str(tmp_path / "mismatch.yaml")).name == "othername"  # a file named as such: as it says
    capsys.readouterr()
    assert main(["study", "list"]) == 0  # (it was listed as a valid study, which status and run then refused)
    assert "mismatch " in (out := capsys.readouterr().out) and "invalid: " in out.split("mismatch ", 1)[1].splitlines()[0]

def test_a_study_of_yours_that_replaces_a_shipped_one_is_marked(tmp_path, monkeypatch, capsys):
    from xling.study.spec import replaces_shipped

    shutil.copy(packaged("studies")["headline-cpu"], tmp_path / "headline-cpu.yaml")  # found first by this name
    (tmp_path / "mine.yaml").write_text(packaged("studies")["lr-cpu"].read_text().replace("name: lr-cpu", "name: mine"))
    monkeypatch.setenv("XLING_STUDIES", str(tmp_path))
    assert replaces_shipped(tmp_path / "headline-cpu.yaml") and not replaces_shipped(tmp_path / "mine.yaml")
    assert not replaces_shipped(packaged("studies")["headline-cpu"])
    assert main(["study", "list"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert listed["headline-cpu"].endswith(f"[yours: {tmp_path / 'headline-cpu.yaml'}, replacing xling's]")
    assert listed["mine"].endswith(f"[yours: {tmp_path / 'mine.yaml'}]") and "[yours" not in listed["table1-cpu"]


def test_xling_runs_naming_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("not a directory")
    monkeypatch.setenv("XLING_RUNS", str(tmp_path / "afile"))  # (every study read as not started)
    assert main(["study", "status", "headline-cpu"]) == 2
    assert "$XLING_RUNS" in capsys.readouterr().err

def test_every_shipped_study_is_valid():
    shipped = packaged("studies")
    assert available_studies().items() >= shipped.items()  # found by name, like the user's own
    assert set(OURS) <= set(shipped)
    for name, path in shipped.items():
        study = load_study(str(path))
        assert study.name == name and study.runs and study.paper, name
        if study.scale == "cpu" and name in OURS:  # at least 3 seeds for every bilingual setting
            mixed = [r for r in study.runs if r.config["languages"]["p"] not in (0.0, 1.0) or r.config["languages"]["schedule"]]
            settings = {}
            for r in mixed:
                settings.setdefault(r.setting, set()).add(r.config["train"]["seed"])
            assert all(len(s) >= 3 for s in settings.values()), name


def test_a_study_says_how_much_it_trains(capsys):
    """For planning: data fractions summed in the study's 1x, and tokens where the budget is pinned (the paper's)."""
    ladder = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0]
    length, tokens, fixed = load_study("headline-paper").training_length()  # the ladder, and 6 runs at 1x
    assert (length, tokens, fixed) == (pytest.approx(sum(ladder) + 6), sum(round(f * 1197015040) for f in ladder)
                                       + 6 * 1197015040, 0)
    assert load_study("headline-cpu").training_length()[1] is None  # 1x is one pass over a corpus: tokens unknown
    assert main(["study", "list"]) == 0
    assert "  15.3 x 1x,  18.4B tokens  Table 1" in capsys.readouterr().out


def test_the_paper_studies_fit_gpt_small_laws_on_the_papers_ladder_and_share_its_runs():
    """The paper fits its GPT-small law on 0.05 ... 1, 1.5, 2, 3 (PAPER.md section 4): a ladder that stops at 1x
    fits another law. Studies of one base share those runs (same ids), so a root trains them once."""
    paper_ladder = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0]
    table1 = {r.id.rsplit("-", 1)[-1] for r in load_study("table1-paper").runs if r.group == "ladder"}
    for name in ("table1-paper", "headline-paper", "figure1-paper", "figure8-paper", "table3-paper"):
        ladder = [r for r in load_study(name).runs if r.group == "ladder"]
        for lang in {(r.config["languages"]["p"], r.config["languages"].get("vocab")) for r in ladder}:
            fractions = sorted(r.config["train"]["data_fraction"] for r in ladder
                               if (r.config["languages"]["p"], r.config["languages"].get("vocab")) == lang)
            assert fractions == paper_ladder, (name, lang)
        if name != "table3-paper":  # English clones: the very runs of Table 1's ladder
            assert {r.id.rsplit("-", 1)[-1] for r in ladder} == table1, name


# --------------------------------------------------------------------------- the runner


def small_study(corpus_dir, name, **kw):
    kw.setdefault("seeds", (0,))
    kw.setdefault("fractions", (0.1, 0.2, 0.3))
    return build_study(tiny_study_dict(corpus_dir, name=name, **kw))


def test_runner_skips_completed_and_resumes_interrupted(tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    from xling.config import from_dict
    from xling.train.trainer import Trainer

    study = small_study(tiny_corpus_dir, "resume", ps=(0.5,), fractions=(0.1,))
    first, second = study.runs[-1], study.runs[0]  # the mix run (23 steps) and a ladder run
    execute_run(second.to_json(), str(tmp_path))  # one run complete
    assert is_complete(second.run_dir(tmp_path))
    done_mtime = (second.run_dir(tmp_path) / "eval.json").stat().st_mtime_ns
    Trainer(from_dict(first.config), first.run_dir(tmp_path)).fit(progress=False, stop_at=15)  # interrupted at 15
    row = next(r for r in study_status(study, tmp_path) if r["id"] == first.id)
    assert (row["state"], row["step"], row["checkpoint"]) == ("interrupted", 15, 10)
    assert "15/94 (resumes from step 10, its last checkpoint)" in status_table(study, study_status(study, tmp_path))
    restored = []
    original = Trainer._restore
    monkeypatch.setattr(Trainer, "_restore", lambda self: restored.append(original(self)) or restored[-1])
    lines = []
    counts = run_study(study, tmp_path, log=lines.append)
    assert counts == {"total": 2, "completed": 2, "failed": 0}
    assert lines[0].endswith(f"1 already complete, 1 to run; 1 resumes from a checkpoint: {first.id} at step 10")
    assert (second.run_dir(tmp_path) / "eval.json").stat().st_mtime_ns == done_mtime  # not redone
    assert restored == [10]  # only the interrupted run trained, from its checkpoint at step 10
    info = read_json_file(first.run_dir(tmp_path) / "run.json")
    assert info["status"] == "completed" and info["step"] == info["steps"]
    assert [r["state"] for r in study_status(study, tmp_path)] == ["completed"] * 2
    # a finished run's study.json damaged: status says so, and a rerun writes it again (the run is not retrained)
    record_path = second.run_dir(tmp_path) / "study.json"
    record_path.write_text(record_path.read_text()[:50])
    row = next(r for r in study_status(study, tmp_path) if r["id"] == second.id)
    assert row["state"] == "damaged" and "study.json cannot be read: `xling study run` of its study" in row["error"]
    lines = []
    assert run_study(study, tmp_path, log=lines.append)["completed"] == 2
    assert f"{second.id}: its study.json could not be read: written again (the run had finished)" in lines
    assert read_json_file(record_path)["study"] == "resume" and restored == [10]
    assert (second.run_dir(tmp_path) / "eval.json").stat().st_mtime_ns == done_mtime
    assert [r["state"] for r in study_status(study, tmp_path)] == ["completed"] * 2
    # `xling status` of its run: the study is no name xling finds (a dict here, or a YAML file elsewhere)
    capsys.readouterr()
    assert main(["status", str(first.run_dir(tmp_path))]) == 0
    assert "study resume: `xling study status FILE` lists all its runs" in capsys.readouterr().out
    monkeypatch.setenv("XLING_RUNS", str(tmp_path))  # no directory given: every run under the runs root
    assert main(["status"]) == 0 and first.id in capsys.readouterr().out
    monkeypatch.setenv("XLING_RUNS", str(tmp_path / "none"))
    assert main(["status"]) == 2 and "no runs at" in capsys.readouterr().err


def test_status_says_what_a_rerun_of_an_interrupted_run_does():
    from types import SimpleNamespace

    row = {"id": "r", "group": "mix", "state": "interrupted", "steps": 444, "error": ""}
    lines = status_table(SimpleNamespace(name="s", description=""), [
        dict(row, step=444, checkpoint=444), dict(row, step=300, checkpoint=250), dict(row, step=5, checkpoint=None)])
    assert "444/444 (training done, stopped in its evaluation: a rerun only evaluates)" in lines
    assert "300/444 (resumes from step 250, its last checkpoint)" in lines
    assert "5/444 (starts again: no checkpoint yet)" in lines


def test_failed_run_is_recorded_and_the_study_goes_on(tiny_corpus_dir, tmp_path, monkeypatch):
    from xling.study.store import Store
    from xling.train.trainer import Trainer

    study = small_study(tiny_corpus_dir, "fails", ps=(0.5,), fractions=(0.1,))
    original = Trainer.fit

    def flaky(self, *a, **kw):
        if self.cfg.languages.p == 0.5:
            raise RuntimeError("boom")
        return original(self, *a, **kw)

    monkeypatch.setattr(Trainer, "fit", flaky)
    lines = []
    counts = run_study(study, tmp_path, log=lines.append)
    assert counts["failed"] == 1 and counts["completed"] == 1
    # the retry command names the study's root (run as shown, it went to the default root, where nothing failed)
    assert lines[-1] == (f"1 run failed; see study.json in its run directory. `xling study run fails --root "
                         f"{tmp_path}` retries it.")
    failed = next(r for r in study.runs if r.group == "mix")
    rec = read_json_file(failed.run_dir(tmp_path) / "study.json")
    assert rec["status"] == "failed" and "RuntimeError: boom" in rec["error"]
    row = Store(tmp_path / "xling.db").runs("fails")
    assert {r["name"]: r["status"] for r in row}[failed.id] == "failed"
    monkeypatch.setattr(Trainer, "fit", original)
    counts = run_study(study, tmp_path, log=lambda *_: None)  # a rerun retries only the failed run
    assert counts == {"total": 2, "completed": 2, "failed": 0}
    assert read_json_file(failed.run_dir(tmp_path) / "study.json")["attempts"] == 2


def _probe(spec_json: dict, root: str, fail: type | None) -> list[str]:
    """A study runner's `then` for the test below: a line, or `fail` raised."""
    if fail:
        raise fail("no probe today")
    run_dir = RunSpec.from_json(spec_json).run_dir(root)
    assert is_complete(run_dir) and is_locked(run_dir) and lock_holder(run_dir) == os.getpid()  # still held here
    return [f"probed {spec_json['id']}"]


def test_then_runs_after_each_run_the_runner_completes_and_cannot_fail_it(tiny_corpus_dir, tmp_path, monkeypatch):
    from xling.train.trainer import Trainer

    study = small_study(tiny_corpus_dir, "then", ps=(0.5,), fractions=(0.1,))
    lines = []
    assert run_study(study, tmp_path, log=lines.append, then=(_probe, None))["completed"] == 2
    for spec in study.runs:  # each right after its run's line
        assert f"] {spec.id} in " in lines[lines.index(f"probed {spec.id}") - 1]
    again = study.runs[0]
    shutil.rmtree(again.run_dir(tmp_path))
    lines.clear()
    counts = run_study(study, tmp_path, log=lines.append, then=(_probe, ValueError))
    assert counts == {"total": 2, "completed": 2, "failed": 0}
    assert lines[-1] == f"{again.id}: its analysis after training failed: ValueError: no probe today"
    assert sum(again.id in line for line in lines) == 2  # (the run complete before: not trained, not probed)
    assert read_json_file(again.run_dir(tmp_path) / "study.json")["status"] == "completed"
    shutil.rmtree(again.run_dir(tmp_path))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in it stops the study, as in training
        run_study(study, tmp_path, log=lambda _: None, then=(_probe, KeyboardInterrupt))
    assert is_complete(again.run_dir(tmp_path))
    shutil.rmtree(again.run_dir(tmp_path))
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: 1 / 0)
    lines.clear()
    assert run_study(study, tmp_path, log=lines.append, then=(_probe, None))["failed"] == 1
    assert not any(line.startswith("probed") or "after training" in line for line in lines)  # a failed run: no hook


@pytest.mark.parametrize("holder_finishes", [True, False])
def test_a_runner_waits_for_a_run_another_process_holds(tiny_corpus_dir, tmp_path, holder_finishes):
    """The run is counted when its holder finishes it, and trained here when the holder gives up."""
    import threading

    from xling.train.evaluate import evaluate_run
    from xling.train.trainer import Trainer

    study = small_study(tiny_corpus_dir, "locked", ps=(0.5,), fractions=(0.1,))
    spec = study.runs[0]
    held, release = spec.run_dir(tmp_path), threading.Event()

    def other_runner():
        with run_lock(held) as got:
            assert got
            release.wait(30)
            if holder_finishes:
                Trainer(spec.run_config, held).fit(progress=False)
                evaluate_run(held, trained_only=True)

    thread = threading.Thread(target=other_runner)
    thread.start()
    lines = []

    def log(line):
        lines.append(line)
        if line.startswith("waiting for"):  # this runner has found the run taken: let the other one go on
            assert study_status(study, tmp_path)[0]["state"] == "running"
            release.set()

    counts = run_study(study, tmp_path, log=log, poll=0.05)
    thread.join()
    assert counts == {"total": 2, "completed": 2, "failed": 0} and is_complete(held)
    finished_elsewhere = any(f"{spec.id} finished by process {os.getpid()}" in line for line in lines)
    assert finished_elsewhere == holder_finishes
    assert read_json_file(held / "study.json").get("attempts", 0) == (0 if holder_finishes else 1)


def _runner(path: Path, root: Path, *extra: str) -> subprocess.Popen:
    code = "import sys; from xling.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "study", "run", str(path), "--root", str(root), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_concurrent_runners_never_train_the_same_run(tiny_corpus_dir, tmp_path):
    data = tiny_study_dict(tiny_corpus_dir, name="pair", seeds=(0,), ps=(0.5,), fractions=(0.1, 0.2))
    path = write_study(tmp_path / "pair.yaml", data)
    procs = [_runner(path, tmp_path / "runs") for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs  # together they finished the study
    study = build_study(data)
    assert all(is_complete(r.run_dir(tmp_path / "runs")) for r in study.runs), outputs
    # Each run was attempted exactly once: the other runner found it locked or already complete.
    assert [read_json_file(r.run_dir(tmp_path / "runs") / "study.json")["attempts"] for r in study.runs] == [1] * 3


def test_kill_9_mid_study_then_rerun_does_only_the_missing_work(tiny_corpus_dir, tmp_path, monkeypatch):
    from xling.train.trainer import Trainer

    data = tiny_study_dict(tiny_corpus_dir, name="killed", seeds=(0,), ps=(0.5,), fractions=(0.3, 0.6),
                           mix_fraction=0.6)
    path, root = write_study(tmp_path / "killed.yaml", data), tmp_path / "runs"
    study = build_study(data)
    proc = _runner(path, root, "--workers", "1")  # one run at a time: none can finish between the check and the kill
    deadline = time.time() + 90
    # Kill once one run is complete and another has written a checkpoint but not finished.
    while time.time() < deadline:
        done = [r for r in study.runs if is_complete(r.run_dir(root))]
        started = [r for r in study.runs if not is_complete(r.run_dir(root))
                   and list((r.run_dir(root) / "checkpoints").glob("step_*"))]
        if done and started:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done and started, "the runner finished before it could be killed"
    done_ids = {r.id for r in study.runs if is_complete(r.run_dir(root))}
    mtimes = {r.id: (r.run_dir(root) / "eval.json").stat().st_mtime_ns for r in study.runs if r.id in done_ids}
    restored, executed = [], []
    original_restore, original_fit = Trainer._restore, Trainer.fit
    monkeypatch.setattr(Trainer, "_restore", lambda self: restored.append(original_restore(self)) or restored[-1])
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **kw: executed.append(self.run.path.name) or original_fit(self, *a, **kw))
    counts = run_study(study, root, log=lambda *_: None)
    assert counts["completed"] == len(study.runs) and counts["failed"] == 0
    assert set(executed) == {r.id for r in study.runs} - done_ids  # only the missing runs were trained
    assert all((r.run_dir(root) / "eval.json").stat().st_mtime_ns == mtimes[r.id] for r in study.runs if r.id in done_ids)
    assert any(step > 0 for step in restored)  # the killed run resumed from its checkpoint
    for r in study.runs:
        info = json.loads((r.run_dir(root) / "run.json").read_text())
        assert info["status"] == "completed" and info["step"] == info["steps"]


def test_worker_processes_complete_a_study(tiny_corpus_dir, tmp_path):
    study = small_study(tiny_corpus_dir, "pool", ps=(0.5,), fractions=(0.1,))
    lines = []
    counts = run_study(study, tmp_path, workers=2, log=lines.append)
    assert counts["completed"] == 2 and "2 workers" in lines[0]


def test_ray_engine_runs_each_run_as_a_task(tiny_corpus_dir, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'xling[ray]'")
    study = small_study(tiny_corpus_dir, "ray", ps=(0.5,), fractions=(0.1,))
    try:
        counts = run_study(study, tmp_path, workers=2, engine="ray", log=lambda *_: None)
    finally:
        ray.shutdown()
    assert counts["completed"] == 2


def test_ray_tasks_on_a_cluster_get_the_drivers_directory_and_variables(tiny_corpus_dir, tmp_path, monkeypatch):
    """A cluster's Ray workers start where `ray start` ran, with its environment: a study's relative corpus paths did
    not exist there, and its cache and the xling imported were the node's. The driver's directory goes with each task
    and xling's variables with the job; a directory the node lacks is one line."""
    import sys
    import types

    from xling.study.launch import Launch
    from xling.study.workers import ray_task

    seen = {}

    class Started(Exception):
        pass

    def remote(function):
        seen["task"] = function
        raise Started

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: seen.update(init=kw), remote=remote,
                                 cancel=lambda ref: None, wait=lambda *a, **kw: ([], []))
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", f"/somewhere/src{os.pathsep}relative/src")  # (absolute for the node)
    monkeypatch.delenv("XLING_STUDIES", raising=False)
    study = small_study(tiny_corpus_dir, "ray-cluster", ps=(0.5,), fractions=(0.1,))
    with pytest.raises(Started):
        next(Launch("ray", 2, 1)._ray(study.runs, tmp_path))
    env = seen["init"]["runtime_env"]["env_vars"]
    assert env["XLING_CACHE"] == str(tmp_path / "cache")
    assert env["PYTHONPATH"] == f"/somewhere/src{os.pathsep}{os.getcwd()}/relative/src"
    assert "XLING_STUDIES" not in env and seen["init"]["address"] == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # `ray job submit`: its runtime env stays (Ray merges none)
    with pytest.raises(Started):
        next(Launch("ray", 2, 1)._ray(study.runs, tmp_path))
    assert "runtime_env" not in seen["init"]
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    failed = ray_task(study.runs[0].to_json(), str(tmp_path), 1, workdir="/no/such/dir")  # this run fails, not the study
    assert failed["status"] == "failed" and failed["id"] == study.runs[0].id
    assert re.match(r"the study's directory /no/such/dir is not on Ray node .*: run `xling study run` from a directory "
                    "every node shares", failed["error"])

    def unreachable(**kw):
        raise ConnectionError("Could not find any running Ray instance.\nmore lines")

    class RemoteError(XlingError):  # how Ray raises a task's XlingError: the text holds the task's traceback
        cause = XlingError("the task's one line")

    class Task:
        def options(self, **kw):
            return self

        def remote(self, *args):
            return "ref"

    def remote_error(ref):
        raise RemoteError("ray::ray_task() (pid=1)\n  File ...\nxling.errors.XlingError: the task's one line")

    running = types.SimpleNamespace(is_initialized=lambda: True, remote=lambda f: Task(), nodes=lambda: [],
                                    wait=lambda pending, **kw: (pending[:1], pending[1:]), get=remote_error,
                                    cancel=lambda ref: None)
    monkeypatch.setitem(sys.modules, "ray", running)
    with pytest.raises(XlingError) as raised:
        next(Launch("ray", 2, 1)._ray(study.runs, tmp_path))
    assert str(raised.value) == "the task's one line"
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(fake, "init", unreachable)  # (it was a traceback, after minutes of Ray's own lines)
    with pytest.raises(XlingError, match=r"cannot reach the Ray cluster at RAY_ADDRESS=10.0.0.1:6379 \(Could not find "
                                         r"any running Ray instance.\): start it"):
        next(Launch("ray", 2, 1)._ray(study.runs, tmp_path))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_ray_study_stops_its_running_task_at_a_step_end(tiny_corpus_dir, tmp_path, stop):
    """Ctrl-C in the runner: the run in a Ray task ends its step with a checkpoint and says interrupted (before, it
    died with the runner's Ray, as by kill -9, and said running, losing its steps since the last checkpoint); the
    queued run never starts. SIGTERM (a scheduler's stop) the same: Ray's own handler, which dumped a stack trace and
    ended the runner, is replaced by the one the runner had."""
    import threading

    from xling.study.launch import Launch
    from xling.train.rundir import RunDir

    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'xling[ray]'")
    steps = 5000  # (a minute at most, should the stop not come)
    base = tiny_config_dict(tiny_corpus_dir, train={"steps": steps, "checkpoint_every": steps})
    study = build_study({"name": "raystop", "base": base, "grid": {"train.seed": [0, 1]}})
    dirs = [spec.run_dir(tmp_path) for spec in study.runs]

    def ctrl_c_once_training():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any((d / "metrics.jsonl").is_file() and RunDir(d).read_metrics()
                                                      for d in dirs):
            time.sleep(0.2)
        os.kill(os.getpid(), stop)

    # Ctrl-C as a terminal sends it, whatever an earlier test left behind; SIGTERM as `xling` turns it into Ctrl-C
    handler, blocked = signal.signal(signal.SIGINT, signal.default_int_handler), signal.pthread_sigmask(
        signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    threading.Thread(target=ctrl_c_once_training, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            list(Launch.plan("ray", 1).execute(study.runs, tmp_path))  # one task at a time: the other waits
    finally:
        ray.shutdown()
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, sigterm)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    started = [d for d in dirs if (d / "run.json").is_file()]
    assert len(started) == 1
    info, run = read_json(started[0] / "run.json"), RunDir(started[0])
    assert info["status"] == "interrupted" and 0 < info["step"] == run.newest_checkpoint_step() < steps


@pytest.mark.parametrize("inherited,expected", [({"GOMP_SPINCOUNT": "3000"}, {"GOMP_SPINCOUNT": "3000"}),
                                                ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}),
                                                ({}, {"OMP_WAIT_POLICY": "PASSIVE"})])
def test_study_workers_keep_the_openmp_wait_policy_the_cli_chose(monkeypatch, inherited, expected):
    import torch

    from xling.study import workers as study

    monkeypatch.setattr(study.os, "environ", dict(inherited))  # a scratch environment
    threads = torch.get_num_threads()
    study.init_worker(threads)
    assert study.os.environ == {**expected, "OMP_NUM_THREADS": str(threads)}


def test_a_run_shared_by_two_studies_is_trained_once(tiny_corpus_dir, tmp_path, monkeypatch):
    """The second study adopts the first's completed twin (same config) instead of training it:
    same results, checkpoints linked, provenance recorded; --no-reuse would train it."""
    from xling.study.store import Store
    from xling.train.trainer import Trainer

    first = small_study(tiny_corpus_dir, "first", ps=(0.5,), fractions=(0.1,))
    assert run_study(first, tmp_path, log=lambda *_: None)["completed"] == 2
    # The second study shares the ladder run and adds a 90/10 run.
    second = small_study(tiny_corpus_dir, "second", ps=(0.1,), fractions=(0.1,))
    shared = next(r for r in second.runs if r.group == "ladder")
    twin = next(r for r in first.runs if r.group == "ladder")
    assert shared.id == twin.id and shared.study != twin.study
    mine, theirs = shared.run_dir(tmp_path), twin.run_dir(tmp_path)
    for analysis in ("alignment/alignment.json", "transfer/task-EN.json"):  # analyses name the run they are of
        (theirs / analysis).parent.mkdir(parents=True, exist_ok=True)
        (theirs / analysis).write_text(json.dumps({"run": str(theirs), "value": 1.5}))
    trained = []
    original = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **kw: trained.append(self.cfg.languages.p) or original(self, *a, **kw))
    lines = []
    counts = run_study(second, tmp_path, log=lines.append)
    assert counts == {"total": 2, "completed": 2, "failed": 0}
    assert trained == [0.1]  # only the 90/10 run trained
    assert any(f"reused from first/{twin.id}" in line for line in lines)
    for name in ("eval.json", "metrics.jsonl", "config.yaml"):
        assert (mine / name).read_bytes() == (theirs / name).read_bytes()
    for analysis in ("alignment/alignment.json", "transfer/task-EN.json"):
        assert read_json_file(mine / analysis) == {"run": str(mine), "value": 1.5, "copied_from": str(theirs)}
    weights = sorted(theirs.rglob("model.safetensors"))
    assert weights and all((mine / w.relative_to(theirs)).stat().st_ino == w.stat().st_ino for w in weights)
    assert read_json_file(mine / "study.json")["reused_from"] == f"first/{twin.id}"
    assert {r["name"] for r in Store(tmp_path / "xling.db").runs("second")} == {r.id for r in second.runs}
    # Deleting the copy and running again without reuse trains it.
    import shutil

    shutil.rmtree(mine)
    trained.clear()
    run_study(second, tmp_path, log=lambda *_: None, reuse=False)
    assert trained == [0.0]


def test_a_run_with_a_different_config_is_no_twin(tiny_corpus_dir, tmp_path):
    from xling.study.runner import find_twin

    first = small_study(tiny_corpus_dir, "first", ps=(0.5,), fractions=(0.1,))
    run_study(first, tmp_path, log=lambda *_: None)
    twin = next(r for r in first.runs if r.group == "ladder")
    other = small_study(tiny_corpus_dir, "other", ps=(0.5,), fractions=(0.1,))
    spec = next(r for r in other.runs if r.group == "ladder")
    assert find_twin(spec, tmp_path) == twin.run_dir(tmp_path)
    # Same id suffix, different config (a hash collision, or a hand-edited config.yaml): not a twin.
    config = twin.run_dir(tmp_path) / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 7"))
    assert find_twin(spec, tmp_path) is None


def test_bigger_models_and_longer_runs_start_first(tiny_corpus_dir):
    from xling.study.runner import _cost

    data = tiny_study_dict(tiny_corpus_dir, seeds=(0,))
    data["groups"]["wide"] = {"set": {"model.d_model": 64, "model.n_heads": 2, "train.data_fraction": 0.4},
                              "grid": {"languages.p": [0.5]}}
    study = build_study(data)
    by_id = {r.id: _cost(r) for r in study.runs}
    wide = next(r.id for r in study.runs if r.group == "wide")
    narrow = next(r.id for r in study.runs if r.group == "mix" and r.dims["languages.p"] == 0.5)
    ladder = sorted((r for r in study.runs if r.group == "ladder"), key=lambda r: r.dims["train.data_fraction"])
    assert by_id[wide] > by_id[narrow]  # same tokens, wider model
    assert [by_id[r.id] for r in ladder] == sorted(by_id[r.id] for r in ladder)  # more tokens, more cost


def test_study_runs_evaluate_only_the_languages_they_trained_on(tiny_corpus_dir, tmp_path):
    study = small_study(tiny_corpus_dir, "evals", ps=(0.5,), fractions=(0.1,))
    run_study(study, tmp_path, log=lambda *_: None)
    evaluated = {r.group: set(read_json_file(r.run_dir(tmp_path) / "eval.json")["languages"]) for r in study.runs}
    assert evaluated == {"ladder": {"L1"}, "mix": {"L1", "L2"}}  # the tiny corpus names its languages L1, L2
    validated = {r.group: set(read_json_file(r.run_dir(tmp_path) / "run.json")["valid"]) for r in study.runs}
    assert validated == evaluated  # the validation during training too


def test_linked_keys_follow_another_keys_value(tiny_corpus_dir):
    data = tiny_study_dict(tiny_corpus_dir, seeds=(0,))
    data["groups"]["mix"]["grid"]["model.n_layers"] = [1, 2]
    data["linked"] = {"model.n_layers": {1: {"train.lr": 0.004}, 2: {"train.lr": 0.001, "train.warmup": 3}}}
    runs = {r.dims.get("model.n_layers"): r.config["train"] for r in build_study(data).runs if r.group == "mix"}
    assert runs[1]["lr"] == 0.004 and runs[2]["lr"] == 0.001 and runs[2]["warmup"] == 3 and runs[1]["warmup"] == 2
    data["linked"] = {"model.n_layers": [1, 2]}
    with pytest.raises(XlingError, match=r"linked\.model\.n_layers must be a mapping"):
        build_study(data)


def test_a_study_with_a_key_its_runs_ignore_is_read_with_a_warning(tiny_corpus_dir, capsys):
    from xling.errors import warnings_to_stderr

    warnings_to_stderr()  # as the CLI shows the library's warnings
    data = tiny_study_dict(tiny_corpus_dir, name="ignored")
    data["base"]["languages"]["second"] = {"translation": "kjv"}  # clones have no second corpus
    study = build_study(data)  # readable (refusing it would leave only a change of every run's id)
    (line,) = capsys.readouterr().err.splitlines()
    assert study.runs and line.startswith("warning: study: run ") and "would change their ids" in line
    assert "languages.second is the second language of a real pair" in line


def test_the_progress_hint_names_a_study_file_and_its_root(tiny_corpus_dir, tmp_path):
    import yaml

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(tiny_study_dict(tiny_corpus_dir, name="other-name")))
    study = load_study(str(path))
    assert study.command("status", tmp_path / "r") == f"xling study status {path} --root {tmp_path / 'r'}"
    assert load_study("headline-cpu").command("status", runs_root(None)) == "xling study status headline-cpu"


def test_a_study_run_is_compared_under_its_studys_protocol_whatever_config_yaml_says(tiny_corpus_dir, tmp_path,
                                                                                     capsys, monkeypatch):
    from xling.train.rundir import RunDir

    study = small_study(tiny_corpus_dir, "protocol", ps=(0.5,), fractions=(0.1,))
    spec = study.runs[-1]
    run_dir = spec.run_dir(tmp_path)
    execute_run(spec.to_json(), str(tmp_path))
    recorded = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(recorded.replace("window: 32", "window: 16"))  # edited by hand
    assert main(["train", str(run_dir), "--resume"]) == 2  # refused: the study compares runs scored alike
    assert "eval.window 16 differs from its study's 32" in capsys.readouterr().err
    assert main(["eval", str(run_dir)]) == 0 and read_json(run_dir / "eval.json")["window"] == 32  # the study's
    assert is_complete(run_dir) and RunDir(run_dir).own_protocol().window == 32
    (run_dir / "eval.json").write_text(json.dumps({**read_json(run_dir / "eval.json"), "window": 16}))
    assert not is_complete(run_dir)  # scored otherwise than its study (as an older xling could): not taken as done
    assert run_study(study, tmp_path, log=lambda *_: None)["completed"] == 2  # the runner scores it again
    assert read_json(run_dir / "eval.json")["window"] == 32
    # eval.batch_size is how it runs, not how it is scored: a resume may change it, and evaluations then use it
    (run_dir / "config.yaml").write_text(recorded)  # (the hand edit undone: resumes are refused while it stands)
    assert main(["train", str(run_dir), "--resume", "--quiet", "--eval.batch_size", "4"]) == 0
    from xling.train import evaluate

    sizes, real = [], evaluate.evaluate_languages
    monkeypatch.setattr(evaluate, "evaluate_languages", lambda *a, **k: sizes.append(a[5]) or real(*a, **k))
    assert main(["eval", str(run_dir)]) == 0 and sizes == [4]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, BrokenPipeError])
def test_a_stopped_run_of_a_study_says_interrupted_in_its_study_json(tiny_corpus_dir, tmp_path, monkeypatch, stop):
    from xling.study import execute
    from xling.train import stopping

    def stopped(self, **kwargs):  # Ctrl-C or SIGTERM while it trains, or the output's reader gone (`| head`)
        raise stop

    spec = small_study(tiny_corpus_dir, "stopped", ps=(0.5,), fractions=(0.1,)).runs[0]
    monkeypatch.setattr(execute.Trainer, "fit", stopped)
    monkeypatch.setattr(stopping, "output_gone", lambda: True)  # (a broken pipe stops only when the output's broke)
    with pytest.raises(stop):
        execute_run(spec.to_json(), str(tmp_path))
    assert read_json(spec.run_dir(tmp_path) / "study.json")["status"] == "interrupted"  # (it said running)
