"""Reliability: kill -9 anywhere and resume exactly; determinism; no network at run time."""

import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from conftest import tiny_config, tiny_config_dict
from xling.train.rundir import RunDir
from xling.train.trainer import Trainer

STEPS = 60
LONGER = {"train": {"steps": STEPS, "checkpoint_every": 1, "log_every": 1}}


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in RunDir(run_dir).read_metrics() if "loss" in r]


def _start_training(config_path, out, resume):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "xling.cli", "train", str(config_path), "--out", str(out), "--quiet", "--no-eval"]
    return subprocess.Popen(argv + (["--resume"] if resume else []), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_uninterrupted(tiny_corpus_dir, tmp_path):
    reference = tmp_path / "reference"
    Trainer(tiny_config(tiny_corpus_dir, **LONGER), reference).fit(progress=False)

    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir, **LONGER)))
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    for _attempt in range(12):
        started = RunDir(out).exists()
        proc = _start_training(config_path, out, resume=started)
        # Kill at a random step (and a random moment within it): with a checkpoint every step,
        # many kills land inside a checkpoint or metrics write.
        target = rng.randint(min(len(_losses(out)) + 1, STEPS), STEPS)
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline and len(RunDir(out).read_metrics()) < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if RunDir(out).read_info().get("status") == "completed" or kills >= 4:
            break
    assert kills >= 2, "the harness should have interrupted training at least twice"
    if RunDir(out).read_info().get("status") != "completed":
        proc = _start_training(config_path, out, resume=True)
        assert proc.wait() == 0, proc.stderr.read().decode()
    assert _losses(out) == _losses(reference)  # every step once, bit-identical


def test_same_seed_same_metrics_different_seed_differs(tiny_corpus_dir, tiny_run, tmp_path):
    Trainer(tiny_config(tiny_corpus_dir), tmp_path / "again").fit(progress=False)
    assert _losses(tmp_path / "again") == _losses(tiny_run)
    Trainer(tiny_config(tiny_corpus_dir, train={"seed": 1}), tmp_path / "seed1").fit(progress=False)
    assert _losses(tmp_path / "seed1") != _losses(tiny_run)


def test_evaluation_of_a_checkpoint_is_identical_across_runs(tiny_run):
    from xling.train.evaluate import evaluate_run

    first, _ = evaluate_run(tiny_run)
    second, _ = evaluate_run(tiny_run)
    assert first["languages"] == second["languages"]


def test_nothing_reaches_the_network(tiny_corpus_dir, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    from xling.train.evaluate import evaluate_run

    out = tmp_path / "offline"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 3}), out).fit(progress=False)
    evaluate_run(out)


def test_one_undecodable_line_in_metrics_stops_nothing(tiny_corpus_dir, tmp_path):
    """Resume, the store and the report read past a damaged metrics line (bad bytes, not JSON)."""
    from test_study import small_study
    from xling.report.study_report import write_report
    from xling.study.runner import run_study
    from xling.study.store import Store

    def damage(run_dir):
        lines = RunDir(run_dir).metrics_path.read_bytes().splitlines(keepends=True)
        RunDir(run_dir).metrics_path.write_bytes(b"".join(lines[:2] + [b"\xff\xfe{oops\n", b"[1, 2]\n"] + lines[2:]))

    interrupted = tmp_path / "interrupted"
    Trainer(tiny_config(tiny_corpus_dir), interrupted).fit(progress=False, stop_at=6)
    damage(interrupted)
    assert Trainer(tiny_config(tiny_corpus_dir), interrupted).fit(resume=True, progress=False)["status"] == "completed"
    assert [s for s, _ in _losses(interrupted)] == list(range(1, 13))  # every step once, in order

    study = small_study(tiny_corpus_dir, "damaged-metrics", ps=(0.5,), fractions=(0.1, 0.2, 0.3))
    root = tmp_path / "runs"
    assert run_study(study, root)["completed"] == 4
    damage(study.runs[0].run_dir(root))
    assert Store(tmp_path / "rebuilt.db").rebuild(root) == 4
    path, analysis = write_report(study, root, tmp_path / "report")
    assert path.is_file() and len({r.spec.id for r in analysis.rows}) == 4


def test_report_of_runs_shorter_than_a_twentieth_of_1x(tiny_corpus_dir, tmp_path):
    """Lengths are snapped to the paper's 1/20 grid only from 0.025 on (a length of 0 has no logarithm)."""
    from test_study import tiny_study_dict
    from xling.report.study_report import write_report
    from xling.study.runner import run_study
    from xling.study.spec import build_study

    data = tiny_study_dict(tiny_corpus_dir, name="short", seeds=(0,), fractions=(0.1, 0.2, 0.3), mix_fraction=0.02)
    data["one_x"] = 1.0
    study = build_study(data)
    run_study(study, tmp_path / "runs")
    path, analysis = write_report(study, tmp_path / "runs", tmp_path / "report")
    lengths = {s.key.length for s in analysis.summaries}
    assert path.is_file() and lengths and all(0 < x < 0.025 for x in lengths)
