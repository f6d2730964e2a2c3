"""Live training logs (--log tensorboard|wandb|csv): written as training goes, rewritten exactly on
resume, never changing the training, one note without the package; `xling export-logs` afterwards."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import types

import pytest
import yaml

from conftest import tiny_config, tiny_config_dict
from test_study import completed_study
from xling.cli import main
from xling.errors import XlingError
from xling.train import live_log
from xling.train.live_log import LiveLog
from xling.train.trainer import Trainer


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def _csv_rows(run_dir) -> list[dict]:
    assert b"\r" not in (run_dir / "metrics.csv").read_bytes()  # one kind of line end (its header's)
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_tensorboard_has_event_files_before_the_run_finishes(tiny_corpus_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="TensorBoard is optional: pip install 'xling[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, seen = tmp_path / "run", {}
    original = Trainer.train_step

    def step_and_look(self, step):
        if step == 8:  # two thirds in: what would a TensorBoard watching the run show now?
            logs = EventAccumulator(str(run_dir / "tensorboard"))
            logs.Reload()
            seen["tags"] = set(logs.Tags()["scalars"])
            seen["loss_steps"] = [e.step for e in logs.Scalars("loss")]
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", step_and_look)
    with LiveLog(run_dir, ("tensorboard",)) as live:
        Trainer(tiny_config(tiny_corpus_dir), run_dir, live=live).fit(progress=False)
    assert seen["loss_steps"] == list(range(1, 9))  # steps 1-8 already on disk, at step 9 of 12
    assert {"loss", "lr", "tokens_per_s", "tokens/L1", "tokens/L2"} <= seen["tags"]
    logs = EventAccumulator(str(run_dir / "tensorboard"))
    logs.Reload()
    assert [e.step for e in logs.Scalars("loss")] == list(range(1, 13))
    assert [round(e.value, 5) for e in logs.Scalars("loss")] == [round(v, 5) for v in _losses(run_dir)]
    assert logs.Scalars("valid_ppl/L1")[-1].step == 12


def test_logging_changes_nothing_in_the_training(tiny_corpus_dir, tmp_path):
    cfg = tiny_config(tiny_corpus_dir)
    Trainer(cfg, tmp_path / "plain").fit(progress=False)
    with LiveLog(tmp_path / "logged", ("csv", "tensorboard")) as live:
        Trainer(cfg, tmp_path / "logged", live=live).fit(progress=False)
    assert _losses(tmp_path / "logged") == _losses(tmp_path / "plain")  # bit for bit


def test_csv_is_rewritten_exactly_on_resume(tiny_corpus_dir, tmp_path):
    cfg, run_dir = tiny_config(tiny_corpus_dir), tmp_path / "run"
    with LiveLog(run_dir, ("csv",)) as live:
        Trainer(cfg, run_dir, live=live).fit(progress=False, stop_at=6)  # killed after step 6; checkpoint at 4
    assert [r["step"] for r in _csv_rows(run_dir)] == [str(s) for s in range(1, 7)]
    with LiveLog(run_dir, ("csv",)) as live:
        Trainer(cfg, run_dir, live=live).fit(resume=True, progress=False)
    rows = _csv_rows(run_dir)
    train = [r for r in rows if r["split"] == "train"]
    assert [int(r["step"]) for r in train] == list(range(1, 13))  # steps 5 and 6 once, not twice
    assert [round(float(r["loss"]), 6) for r in train] == [round(v, 6) for v in _losses(run_dir)]
    assert int(train[-1]["tokens/L1"]) + int(train[-1]["tokens/L2"]) == 12 * 8 * 32
    assert [r["split"] for r in rows][-1] == "valid" and float(rows[-1]["ppl/L2"]) > 1


def _train_cli(tiny_corpus_dir, tmp_path, *extra: str) -> int:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir)))
    return main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet", *extra])


def test_train_log_csv_from_the_command_line(tiny_corpus_dir, tmp_path, capsys):
    assert _train_cli(tiny_corpus_dir, tmp_path, "--log", "csv") == 0
    rows = _csv_rows(tmp_path / "run")
    assert [r["split"] for r in rows][-2:] == ["valid", "test"]  # the test perplexities come last
    assert float(rows[-1]["ppl/L1"]) > 1


def test_a_missing_package_is_one_note_and_training_goes_on(tiny_corpus_dir, tmp_path, capsys, monkeypatch):
    real = live_log.importlib.util.find_spec
    monkeypatch.setattr(live_log.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    assert _train_cli(tiny_corpus_dir, tmp_path, "--log", "wandb") == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["note: --log wandb skipped: its package is missing (pip install 'xling[wandb]')"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"
    assert not (tmp_path / "run" / "wandb").exists()
    # exporting to it is all export-logs would do: an error there
    assert main(["export-logs", str(tmp_path / "run"), "--log", "wandb"]) == 2
    assert capsys.readouterr().err == "xling: error: --log wandb: its package is missing (pip install 'xling[wandb]')\n"


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in for the wandb package that records what it is told."""
    calls = {"init": [], "log": [], "summary": {}, "finished": 0}

    class Run:
        summary = calls["summary"]

        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finished"] += 1

    def init(**kwargs):
        calls["init"].append(kwargs)
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, __spec__=None))
    monkeypatch.setattr(live_log, "unavailable", lambda name: None)
    return calls


def test_wandb_is_offline_unless_the_user_says_otherwise(tiny_corpus_dir, tmp_path, monkeypatch, fake_wandb):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert _train_cli(tiny_corpus_dir, tmp_path, "--log", "wandb") == 0
    (init,) = fake_wandb["init"]
    assert init["mode"] == "offline" and init["dir"] == str(tmp_path / "run") and init["project"] == "xling-runs"
    assert [step for step, values in fake_wandb["log"] if "loss" in values] == list(range(1, 13))
    assert "test_ppl/L1" in fake_wandb["summary"] and fake_wandb["finished"] == 1
    monkeypatch.setenv("WANDB_MODE", "online")
    shutil.rmtree(tmp_path / "run")
    assert _train_cli(tiny_corpus_dir, tmp_path, "--log", "wandb") == 0
    assert "mode" not in fake_wandb["init"][-1]  # WANDB_MODE decides


def test_a_failing_logger_is_dropped_with_a_warning(tiny_corpus_dir, tmp_path, monkeypatch):
    class Broken:
        def __init__(self, *args):
            pass

        def write(self, record):
            raise OSError("disk full")

        def close(self):
            pass

    warnings = []
    monkeypatch.setitem(live_log._WRITERS, "csv", Broken)
    monkeypatch.setattr(live_log, "log", types.SimpleNamespace(warning=warnings.append))
    with LiveLog(tmp_path / "run", ("csv",)) as live:
        info = Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run", live=live).fit(progress=False)
    assert info["status"] == "completed"
    assert len(warnings) == 1 and "csv logging stopped" in warnings[0] and "disk full" in warnings[0]
    # exporting a finished run's logs is no training to carry on: the failure is the command's (it said it wrote)
    from xling.study.exports import export_run

    with pytest.raises(XlingError, match=r"cannot write csv logs in .*run \(OSError: disk full\): make it writable"):
        export_run(tmp_path / "run", "csv", strict=True)
    assert len(warnings) == 1
    assert export_run(tmp_path / "run", "csv") == "" and len(warnings) == 2  # a study adopting a twin run goes on


def test_export_logs_for_runs_that_trained_without_them(tiny_corpus_dir, tmp_path_factory, tmp_path, capsys):
    study, root = completed_study(tmp_path_factory, tiny_corpus_dir)
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    one = study.runs[0].run_dir(copy)
    assert main(["eval", str(one), "--split", "valid"]) == 0  # the step training already validated at
    assert main(["export-logs", str(one), "--log", "csv"]) == 0
    rows = _csv_rows(one)
    assert rows[-1]["split"] == "test"
    valid = [(r["split"], r["step"]) for r in rows if r["split"] == "valid"]
    assert len(valid) == len(set(valid))  # one row per split and step
    path = tmp_path / "study.yaml"
    from test_study import tiny_study_dict, write_study

    write_study(path, tiny_study_dict(tiny_corpus_dir))
    assert main(["export-logs", str(path), "--root", str(copy), "--log", "csv"]) == 0
    assert f"csv: wrote metrics.csv in {len(study.runs)} run directories" in capsys.readouterr().out
    assert all((r.run_dir(copy) / "metrics.csv").is_file() for r in study.runs)
