"""Checkpoints: data only (no pickle is ever read), exact round trip, full disks, edited configs,
leftovers of a kill, and metrics when a resume finds no checkpoint."""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal

import pytest
import torch
import yaml

from conftest import run_losses, tiny_config, tiny_config_dict
from xling.api.runs import Run
from xling.cli import main
from xling.config import RunConfig
from xling.errors import XlingError
from xling.fsio import sha256_file
from xling.train import rundir as runs
from xling.train.checkpoint_files import load_training
from xling.train.rundir import RunDir
from xling.train.session import load_session
from xling.train.trainer import Trainer, make_optimizer


@pytest.fixture(scope="module")
def interrupted_run(tiny_corpus_dir, tmp_path_factory):
    """A tiny run stopped after step 6 (its checkpoint is at step 4); tests work on copies."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    Trainer(tiny_config(tiny_corpus_dir), out).fit(progress=False, stop_at=6)
    return out


def _copy(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "run")


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def _steps(run_dir):
    return [r["step"] for r in RunDir(run_dir).read_metrics() if "loss" in r]


def _toy_training(steps=3):
    """A small model, Adam as the trainer makes it, and an enabled loss scaler, after a few steps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = make_optimizer(model, 1e-2, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)  # enabled: its state goes through JSON too
    for _ in range(steps):
        scaler.scale(model(torch.randn(5, 4)).square().mean()).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    training = {"step": steps, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state()}
    return model, optimizer, training


class _MakesADirectoryWhenUnpickled:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path, 0o777, True)  # exist_ok: every load would run it


def _make_format_1(ckpt, marker):
    """Turn a checkpoint into the old format (state.pt), with a state.pt that runs code when
    unpickled and a manifest whose checksums match, as a crafted run directory would have."""
    for name in ("training.safetensors", "training.json"):
        (ckpt / name).unlink(missing_ok=True)  # (a format-1 run has none)
    torch.save({"step": 0, "payload": _MakesADirectoryWhenUnpickled(marker)}, ckpt / "state.pt")
    files = {name: sha256_file(ckpt / name) for name in ("model.safetensors", "state.pt")}
    (ckpt / "manifest.json").write_text(json.dumps({"step": int(ckpt.name[5:]), "sha256": files}))


def test_the_training_state_round_trips_exactly(tmp_path):
    model, optimizer, training = _toy_training()
    ckpt = RunDir(tmp_path).save_checkpoint(3, model, training, RunConfig())
    assert sorted(p.name for p in ckpt.iterdir()) == ["manifest.json", "model.safetensors", "training.json",
                                                      "training.safetensors"]
    state = load_training(ckpt)
    assert state["step"] == 3 and state["scaler"] == training["scaler"] and state["scaler"]["scale"] == 256.0
    assert torch.equal(state["torch_rng"], training["torch_rng"])

    restored = make_optimizer(model, 1.0, torch.device("cpu"))
    restored.load_state_dict(state["optimizer"])
    before, after = optimizer.state_dict(), restored.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert isinstance(after["param_groups"][0]["betas"], tuple)  # not the list JSON made of it
    assert before["state"].keys() == after["state"].keys()
    for pid, entries in before["state"].items():
        assert entries.keys() == after["state"][pid].keys() == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in entries.items():
            assert value.dtype == after["state"][pid][key].dtype and torch.equal(value, after["state"][pid][key])


def test_checkpoints_get_the_umask_permissions_and_leftovers_are_removed(tmp_path):
    run = RunDir(tmp_path)
    leftover = run.checkpoints / ".tmp-step_0000002-x1y2"  # what a kill during a write left
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    model, _, training = _toy_training()
    ckpt = run.save_checkpoint(3, model, training, RunConfig())
    assert not leftover.exists()
    umask = os.umask(0o022)
    os.umask(umask)
    assert ckpt.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {p.stat().st_mode & 0o777 for p in ckpt.iterdir()} == {0o666 & ~umask}


def test_a_crafted_pickle_in_an_old_checkpoint_never_runs(tiny_run, tmp_path, capsys):
    run_dir = _copy(tiny_run, tmp_path)
    marker = tmp_path / "pwned"
    for ckpt in RunDir(run_dir).checkpoint_dirs():
        _make_format_1(ckpt, marker)

    load_session(run_dir)  # eval, sample and the analyses read model.safetensors only
    assert not marker.exists()
    assert _cli(capsys, "eval", run_dir)[0] == 0 and not marker.exists()
    assert _cli(capsys, "sample", run_dir, "--language", "L1", "--tokens", "3")[0] == 0 and not marker.exists()
    code, err = _cli(capsys, "train", run_dir, "--resume", "--quiet", "--no-eval")
    assert not marker.exists()
    assert code == 2 and len(err) == 1, err
    assert "written by an older xling in a format this version does not read" in err[0]
    assert "start it again" in err[0]


def test_a_full_disk_during_a_checkpoint_write_leaves_no_partial_checkpoint(tiny_corpus_dir, tmp_path, capsys,
                                                                             monkeypatch):
    real_atomic_write = runs.atomic_write

    @contextlib.contextmanager
    def disk_fills_at_the_training_state(path):
        with real_atomic_write(path) as f:
            if path.name == "training.safetensors":
                f.write(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            yield f

    monkeypatch.setattr(runs, "atomic_write", disk_fills_at_the_training_state)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir)))
    out = tmp_path / "run"
    code, err = _cli(capsys, "train", config, "--out", out, "--quiet")
    assert code == 2 and len(err) == 1 and "free space" in err[0], err
    assert "an interrupted run continues with --resume" in err[0]
    assert os.listdir(out / "checkpoints") == []  # neither the temp directory nor a temp file


def test_a_full_disk_under_eval_says_nothing_of_a_resume(interrupted_run, tmp_path, capsys, monkeypatch):
    from xling.train import evaluate

    def disk_full(path, content):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(evaluate, "atomic_write_json", disk_full)
    code, err = _cli(capsys, "eval", _copy(interrupted_run, tmp_path), "--max-tokens", "64")
    assert code == 2 and len(err) == 1 and "free space" in err[0] and "--resume" not in err[0], err


def test_a_run_resumed_in_another_number_of_processes_says_so(interrupted_run, tmp_path, tiny_corpus_dir, caplog):
    """A torchrun run resumed without torchrun went on without a word: the same rows, gradients averaged in another
    order, so its losses differ from an uninterrupted run's in the last bits."""
    run_dir = _copy(interrupted_run, tmp_path)
    with caplog.at_level("WARNING"):
        Trainer(tiny_config(tiny_corpus_dir), run_dir).fit(resume=True, progress=False, stop_at=7)
    assert "process" not in caplog.text  # as it trained: nothing to say
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "interrupted", "processes": 2}))
    caplog.clear()
    with caplog.at_level("WARNING"):
        Trainer(tiny_config(tiny_corpus_dir), run_dir).fit(resume=True, progress=False)
    assert "trained in 2 processes and goes on in 1: its losses now differ from an uninterrupted run's in the last " \
           "bits (resume it as it trained: torchrun --nproc_per_node 2)" in caplog.text


def test_an_edited_config_is_refused_on_resume(interrupted_run, tmp_path, capsys):
    run_dir = _copy(interrupted_run, tmp_path)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["train"]["lr"] = 1e-3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    code, err = _cli(capsys, "train", run_dir, "--resume", "--quiet", "--no-eval")
    assert code == 2 and len(err) == 1, err
    assert "train.lr changed since checkpoint step_0000004" in err[0] and "restore config.yaml" in err[0]
    assert _steps(run_dir) == list(range(1, 7))  # nothing trained


def test_a_run_whose_config_was_edited_since_its_checkpoint_is_not_read_as_edited(interrupted_run, tmp_path, capsys):
    """Languages renamed in config.yaml after training: eval scored each language under the other's name (and other
    books, another text) without a word; now every command that loads the run refuses, as a resume does. What only
    changes how it is evaluated (eval.*) stays free."""
    run_dir = _copy(interrupted_run, tmp_path)
    trained = (run_dir / "config.yaml").read_text()
    config = yaml.safe_load(trained)
    config["languages"]["names"] = ["L2", "L1"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    for command in (["eval", run_dir], ["sample", run_dir, "--language", "L1", "--tokens", "3"],
                    ["export", run_dir, tmp_path / "hf"]):
        code, err = _cli(capsys, *command)
        assert code == 2 and len(err) == 1, (command, err)
        assert "languages.names changed in" in err[0] and "since checkpoint step_0000004" in err[0], err
    assert not (run_dir / "eval.json").exists() and not (tmp_path / "hf").exists()
    config = yaml.safe_load(trained)
    config["languages"]["transforms"] = {"L2": ["clone", "inverted"]}  # a key the trained config did not have
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    code, err = _cli(capsys, "eval", run_dir)
    assert code == 2 and "languages.transforms.L2 changed in" in err[0], err
    config = yaml.safe_load(trained)
    config["eval"]["batch_size"] = 3
    moved = tmp_path / "moved-corpus"  # the run's text moved (another machine): config.yaml says where it is now
    shutil.copytree(config["corpus"]["paths"][0], moved)
    config["corpus"]["paths"] = [str(moved)]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    code, err = _cli(capsys, "sample", run_dir, "--language", "L1", "--tokens", "3")
    assert code == 0, err
    assert _cli(capsys, "train", run_dir, "--resume", "--quiet", "--no-eval")[0] == 2  # (it trains on that text)


@pytest.mark.parametrize("damage", ["killed before the first checkpoint", "every checkpoint damaged"])
def test_a_resume_without_a_usable_checkpoint_logs_every_step_once(damage, tiny_corpus_dir, interrupted_run,
                                                                   tmp_path, caplog):
    cfg = tiny_config(tiny_corpus_dir)
    if damage == "killed before the first checkpoint":
        run_dir = tmp_path / "run"
        Trainer(cfg, run_dir).fit(progress=False, stop_at=3)
        assert not RunDir(run_dir).checkpoint_dirs()
    else:
        run_dir = _copy(interrupted_run, tmp_path)
        for ckpt in RunDir(run_dir).checkpoint_dirs():
            (ckpt / "model.safetensors").write_bytes(b"damaged")
    Trainer(cfg, run_dir).fit(resume=True, progress=False, stop_at=5)
    assert _steps(run_dir) == [1, 2, 3, 4, 5]
    assert ("no checkpoint verifies" in caplog.text) == (damage == "every checkpoint damaged")


def test_a_resume_on_edited_training_text_is_refused(tiny_corpus_dir, tmp_path, capsys):
    """The run would go on over other sequences than it began with (it used to, without a word)."""
    corpus = shutil.copytree(tiny_corpus_dir, tmp_path / "corpus")
    cfg, run_dir = tiny_config(corpus), tmp_path / "run"
    Trainer(cfg, run_dir).fit(progress=False, stop_at=6)  # a checkpoint at step 4
    recorded = RunDir(run_dir).read_info()["training_text"]
    assert list(recorded) == ["L1"] and len(recorded["L1"]) == 64  # one text for the clones, as the tokens' SHA-256
    original = (corpus / "part0.txt").read_text()
    (corpus / "part0.txt").write_text(original.replace(" the ", " a "))  # edits documents of every split
    code, err = _cli(capsys, "train", run_dir, "--resume", "--quiet", "--no-eval")
    assert code == 2 and len(err) == 1 and "the training text of L1 has changed since" in err[0], err
    assert _steps(run_dir) == list(range(1, 7))  # nothing trained
    (corpus / "part0.txt").write_text(original)  # the text it trained on: it resumes
    Trainer(cfg, run_dir).fit(resume=True, progress=False, stop_at=8)
    assert _steps(run_dir) == list(range(1, 9)) and RunDir(run_dir).read_info()["training_text"] == recorded


def test_resume_removes_what_a_kill_during_a_checkpoint_write_left(tiny_corpus_dir, interrupted_run, tmp_path):
    run_dir = _copy(interrupted_run, tmp_path)
    leftover = RunDir(run_dir).checkpoints / ".tmp-step_0000008-a1b2"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    Trainer(tiny_config(tiny_corpus_dir), run_dir).fit(resume=True, progress=False, stop_at=5)  # no save before 8
    assert not leftover.exists()
    assert _steps(run_dir) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("policy,kept", [("last", [11, 12]), ("log", [1, 2, 4, 8, 11, 12]), ("all", list(range(1, 13)))])
def test_keep_checkpoints_policies(tiny_corpus_dir, tmp_path, policy, kept):
    """last: the two newest; log: also checkpoint_every x 1, 2, 4, 8 ... (alignment over training); all."""
    run = tmp_path / policy
    Trainer(tiny_config(tiny_corpus_dir, train={"checkpoint_every": 1, "keep_checkpoints": policy}), run).fit(
        progress=False)
    assert [int(p.name[5:]) for p in RunDir(run).checkpoint_dirs()] == kept


@pytest.mark.parametrize("stop", [KeyboardInterrupt, BrokenPipeError])  # Ctrl-C; `| head` gone at a progress bar
def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes_it(tiny_corpus_dir, tmp_path, monkeypatch, stop):
    from xling.train import stopping

    monkeypatch.setattr(stopping, "output_gone", lambda: True)  # (a broken pipe is a stop only when the output's is)
    trainer = Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run")
    real_step = Trainer.train_step

    def step_then_ctrl_c(self, step):
        if step == 5:
            raise stop
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    with pytest.raises(stop):
        trainer.fit(progress=False)
    info = RunDir(tmp_path / "run").read_info()
    assert info["status"] == "interrupted" and info["step"] == 5  # not "running"; steps 0-4 were trained
    monkeypatch.setattr(Trainer, "train_step", real_step)
    info = Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run").fit(resume=True, progress=False)
    assert info["status"] == "completed"


def test_a_broken_pipe_that_is_not_the_output_fails_the_run(tiny_corpus_dir, tmp_path, monkeypatch):
    """A logger's connection, say: not the reader of the output gone, so not a stop."""
    def step_then_broken_pipe(self, step):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(Trainer, "train_step", step_then_broken_pipe)
    with pytest.raises(BrokenPipeError):
        Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run").fit(progress=False)
    info = RunDir(tmp_path / "run").read_info()
    assert info["status"] == "failed" and "Broken pipe" in info["error"]


def _signal_during_step(monkeypatch, at: int, signals: tuple[int, ...]):
    """Training sends itself `signals` while step `at` runs (as Ctrl-C, or SLURM's SIGTERM, land mid-step)."""
    real_step = Trainer.train_step

    def step(self, n):
        loss = real_step(self, n)
        if n == at:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step)
    return real_step


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_step_ends_the_step_checkpoints_it_and_resume_is_exact(tiny_corpus_dir, tiny_run, tmp_path,
                                                                         monkeypatch, signum):
    from xling.cli.app import _interrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)  # what `xling` commands and study workers install
    try:
        real_step = _signal_during_step(monkeypatch, at=9, signals=(signum,))
        with pytest.raises(KeyboardInterrupt):
            Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run").fit(progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    run = RunDir(tmp_path / "run")
    info = run.read_info()
    # the tenth step ended and was logged and checkpointed: a resume loses nothing
    assert info["status"] == "interrupted" and info["step"] == 10
    assert [p.name for p in run.checkpoint_dirs()] == ["step_0000008", "step_0000010"]
    assert [r["step"] for r in run.read_metrics() if "loss" in r] == list(range(1, 11))
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert Trainer(tiny_config(tiny_corpus_dir), run.path).fit(resume=True, progress=False)["status"] == "completed"
    assert run_losses(run.path) == run_losses(tiny_run)  # every step once, bit-identical
    # the stop's checkpoint goes once a later one is there: the checkpoints are those of an unstopped run
    assert [p.name for p in run.checkpoint_dirs()] == [p.name for p in RunDir(tiny_run).checkpoint_dirs()]


def test_a_resume_is_exact_with_the_loss_in_several_chunks(tiny_corpus_dir, tmp_path, monkeypatch):
    """A small fp32 head's loss sums its gradient chunk by chunk (model/loss.py): a resume still gives the same bits."""
    from xling.model import loss

    monkeypatch.setattr(loss, "CE_CHUNK_ELEMENTS_SMALL_HEAD", 100 * 640)  # 8 x 32 rows a step of 640 logits each
    whole = Trainer(tiny_config(tiny_corpus_dir), tmp_path / "whole")
    whole.fit(progress=False)
    assert [e - s for s, e in loss._training_chunks(8 * 32, whole.model.head.weight)] == [100, 100, 56]
    real_step = _signal_during_step(monkeypatch, at=5, signals=(signal.SIGINT,))
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run").fit(progress=False)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run").fit(resume=True, progress=False)
    assert run_losses(tmp_path / "run") == run_losses(tmp_path / "whole")


def test_ctrl_c_twice_at_once_is_one_stop(tiny_corpus_dir, tmp_path, monkeypatch):
    from xling.train import stopping

    # `timeout -s INT` signals the process and its group; a study's worker gets the terminal's and its runner's
    monkeypatch.setattr(stopping, "SAME_STOP_WITHIN", 60.0)  # (however slow this machine is today)
    _signal_during_step(monkeypatch, at=5, signals=(signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run").fit(progress=False)
    run = RunDir(tmp_path / "run")
    assert run.read_info()["step"] == 6 and run.checkpoint_dirs()[-1].name == "step_0000006"


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tiny_corpus_dir, tmp_path, monkeypatch):
    from xling.train import stopping

    monkeypatch.setattr(stopping, "SAME_STOP_WITHIN", 0.0)  # (a second press, a while after the first)
    _signal_during_step(monkeypatch, at=5, signals=(signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run").fit(progress=False)
    run = RunDir(tmp_path / "run")
    # the second press stopped the sixth step (steps_done 5): no checkpoint for it
    assert run.read_info()["status"] == "interrupted" and run.read_info()["step"] == 5
    assert [p.name for p in run.checkpoint_dirs()] == ["step_0000004"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_a_signal_while_validating_stops_at_that_step_with_its_checkpoint(tiny_corpus_dir, tiny_run, tmp_path,
                                                                         monkeypatch):
    real_validate = Trainer.validate

    def validate_then_ctrl_c(self, step, *args, **kwargs):
        results = real_validate(self, step, *args, **kwargs)
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return results

    monkeypatch.setattr(Trainer, "validate", validate_then_ctrl_c)
    cfg = tiny_config(tiny_corpus_dir, train={"eval_every": 3})
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path / "run").fit(progress=False)
    run = RunDir(tmp_path / "run")
    assert run.read_info()["step"] == 3 and [p.name for p in run.checkpoint_dirs()] == ["step_0000003"]  # not step 4
    monkeypatch.setattr(Trainer, "validate", real_validate)
    Trainer(cfg, run.path).fit(resume=True, progress=False)
    assert run_losses(run.path) == run_losses(tiny_run)


def test_a_stop_whose_checkpoint_fails_still_reaches_its_handler_and_the_error_goes_on(tiny_corpus_dir, tmp_path,
                                                                                      monkeypatch):
    calls = []

    def handler(signum, frame):  # a study worker's: it notes the SIGTERM (then ends the worker) and raises
        calls.append(signum)
        raise KeyboardInterrupt

    real_save = RunDir.save_checkpoint

    def full_disk_at_the_stop(self, *args, stop=False):
        if stop:
            raise OSError(28, "No space left on device")
        return real_save(self, *args, stop=stop)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        _signal_during_step(monkeypatch, at=5, signals=(signal.SIGTERM,))
        monkeypatch.setattr(RunDir, "save_checkpoint", full_disk_at_the_stop)
        with pytest.raises(OSError, match="No space left"):
            Trainer(tiny_config(tiny_corpus_dir), tmp_path / "run").fit(progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert calls == [signal.SIGTERM]
    assert RunDir(tmp_path / "run").read_info()["status"] == "failed"


def test_a_stops_checkpoint_goes_when_a_later_is_written_even_after_checkpoint_every_changes(tiny_corpus_dir,
                                                                                            tmp_path, monkeypatch):
    keep_all = {"keep_checkpoints": "all"}
    real_step = _signal_during_step(monkeypatch, at=5, signals=(signal.SIGINT,))
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tiny_corpus_dir, train=keep_all), tmp_path / "run").fit(progress=False)
    run = RunDir(tmp_path / "run")
    assert [p.name for p in run.checkpoint_dirs()] == ["step_0000004", "step_0000006"]
    monkeypatch.setattr(Trainer, "train_step", real_step)
    Trainer(tiny_config(tiny_corpus_dir, train={**keep_all, "checkpoint_every": 3}), run.path).fit(resume=True,
                                                                                                  progress=False)
    # 6 was the stop's (though on the new grid); 4 was a regular one, which `all` keeps
    assert [p.name for p in run.checkpoint_dirs()] == ["step_0000004", "step_0000009", "step_0000012"]


def test_a_forwarded_stop_is_never_a_second_press(monkeypatch):
    from xling.train import stopping

    calls = []
    stop = stopping.StepEndStop()
    stop.handlers = {signal.SIGINT: lambda s, f: calls.append(s), stopping.FORWARDED: lambda s, f: calls.append(s)}
    stop._note(signal.SIGINT, None)
    stop.since -= 10  # long ago
    stop._note(stopping.FORWARDED, None)  # the runner passing the same Ctrl-C on, late: held with the first
    assert calls == [] and stop.requested
    stop._note(signal.SIGINT, None)  # a second press, later: now
    assert calls == [signal.SIGINT]
    stop.deliver()
    assert calls == [signal.SIGINT, signal.SIGINT] and not stop.requested


def test_results_of_an_interrupted_run_carry_the_step_of_the_weights_they_used(interrupted_run, tmp_path):
    """run.json says how far training got (6); evaluation used the last checkpoint (4) and says so."""
    from xling.train.evaluate import evaluate_run

    run_dir = _copy(interrupted_run, tmp_path)
    assert RunDir(run_dir).read_info()["step"] == 6
    report, _ = evaluate_run(run_dir, split="valid", max_tokens=0)
    assert report["step"] == 4 == load_session(run_dir, device="cpu").step


def test_a_damaged_newest_checkpoint_is_named_and_the_one_used_instead_said(tiny_corpus_dir, tmp_path, capsys):
    from xling.errors import warnings_to_stderr

    run_dir = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir), run_dir).fit(progress=False, stop_at=9)  # checkpoints at 4 and 8
    (RunDir(run_dir).checkpoint_dirs()[-1] / "model.safetensors").write_bytes(b"damaged")
    warnings_to_stderr()  # as the CLI shows the library's warnings
    assert main(["eval", str(run_dir), "--split", "valid"]) == 0
    out, err = capsys.readouterr()
    assert "skipping damaged checkpoint step_0000008" in err and "using step_0000004 instead" in err
    assert "valid perplexity at step 4 of 12, an earlier checkpoint" in out  # not read as the finished run's
    report = json.loads((run_dir / "eval_valid.json").read_text())
    logged = {r["step"]: r["tokens"] for r in RunDir(run_dir).read_metrics() if "tokens" in r}
    assert report["step"] == 4 and report["tokens_trained"] == logged[4] != logged[9]  # step 4's, not run.json's
    assert sum(logged[4].values()) == 4 * 8 * 32
    for ckpt in RunDir(run_dir).checkpoint_dirs():
        (ckpt / "model.safetensors").write_bytes(b"damaged")
    assert main(["eval", str(run_dir), "--split", "valid"]) == 2
    assert "no checkpoint of" in capsys.readouterr().err


def test_xling_eval_under_another_protocol_writes_a_file_of_its_own(tiny_corpus_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), run_dir).fit(progress=False)
    assert main(["eval", str(run_dir)]) == 0
    own = (run_dir / "eval.json").read_bytes()
    assert main(["eval", str(run_dir), "--window", "16", "--last-n", "4"]) == 0
    assert "(window 16, last 4 scored) -> " in capsys.readouterr().out
    report = json.loads((run_dir / "eval_test_window16_last4_all.json").read_text())
    assert (report["window"], report["last_n"]) == (16, 4) and (run_dir / "eval.json").read_bytes() == own
    assert main(["eval", str(run_dir), "--window", "0"]) == 0  # 0: the model's length (and a quarter of it), as here
    assert f"(window 32, last 8 scored) -> {run_dir / 'eval.json'}" in capsys.readouterr().out
    assert main(["eval", str(run_dir), "--window", "16", "--last-n", "0"]) == 0  # 0: a quarter, as in a config
    assert "(window 16, last 4 scored) -> " in capsys.readouterr().out
    assert main(["eval", str(run_dir), "--window", "64"]) == 2  # longer than the model's 32 positions
    assert "the window (64) must be between 2 and the model's length (32)" in capsys.readouterr().err


def test_a_resume_records_new_evaluation_settings_as_an_edit_of_config_yaml(tiny_corpus_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), run_dir).fit(progress=False)
    assert main(["train", str(run_dir), "--resume", "--quiet", "--eval.window", "16"]) == 0  # last_n: a quarter
    captured = capsys.readouterr()
    assert f"note: eval.window 32 -> 16, recorded in {run_dir / 'config.yaml'}" in captured.err
    assert f"note: eval.last_n 8 -> 4, recorded in {run_dir / 'config.yaml'}" in captured.err
    assert "(window 16, last 4 scored)" in captured.out  # the final evaluation scores as the validation did
    recorded = RunDir(run_dir).read_config().eval
    assert (recorded.window, recorded.last_n) == (16, 4)
    assert json.loads((run_dir / "eval.json").read_text())["window"] == 16
    assert main(["train", str(run_dir), "--resume", "--quiet", "--eval.window", "16", "--eval.last_n", "2"]) == 0
    assert "eval.last_n 4 -> 2" in capsys.readouterr().err  # a last_n given wins
    assert main(["train", str(run_dir), "--resume", "--quiet", "--eval.window", "16"]) == 0  # the same window
    assert "eval.last_n" not in capsys.readouterr().err and RunDir(run_dir).read_config().eval.last_n == 2


def test_a_study_run_resumed_by_hand_keeps_its_studys_protocol(tiny_corpus_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), run_dir).fit(progress=False)
    (run_dir / "study.json").write_text("{}")  # a study's run: its study compares runs scored alike
    assert main(["train", str(run_dir), "--resume", "--eval.window", "16"]) == 2
    assert "eval.window 16 differs from its study's 32" in capsys.readouterr().err
    assert RunDir(run_dir).read_config().eval.window == 32


def test_ctrl_c_in_xling_train_names_the_command_that_continues(tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir)), encoding="utf-8")
    real_step = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self, step: real_step(self, step) if step < 5 else
                        (_ for _ in ()).throw(KeyboardInterrupt))
    out = tmp_path / "my run"  # quoted in the hint, so that it pastes
    assert main(["train", str(config), "--out", str(out), "--quiet", "--no-eval", "--log", "csv"]) == 130
    assert f"continue with: xling train '{out}' --resume --no-eval --quiet --log csv\n" in capsys.readouterr().err
    monkeypatch.setattr(Run, "evaluate", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["eval", str(out)]) == 130  # not a training command: no training hint
    assert "xling train" not in capsys.readouterr().err


def test_a_start_that_failed_before_training_is_no_run_to_refuse(tiny_corpus_dir, tmp_path):
    cfg = tiny_config(tiny_corpus_dir)
    run_dir = tmp_path / "run"
    RunDir(run_dir).write_config(cfg)  # what a start on a full disk left: config.yaml, no run.json, no checkpoint
    assert Trainer(cfg, run_dir).fit(progress=False)["status"] == "completed"  # no --resume needed
    with pytest.raises(XlingError, match="already exists: pass --resume"):
        Trainer(cfg, run_dir).fit(progress=False)  # a trained run still is


def test_a_resume_from_another_directory_says_where_the_run_reads_its_corpus(tiny_corpus_dir, tmp_path, monkeypatch,
                                                                             capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    shutil.copytree(tiny_corpus_dir, project / "data")
    elsewhere.mkdir()
    monkeypatch.chdir(project)  # the corpus path is relative: data
    cfg = tiny_config(tiny_corpus_dir, corpus={"name": "text", "paths": ["data"], "doc_per_line": True},
                      train={"steps": 8})
    Trainer(cfg, project / "run").fit(progress=False, stop_at=4)
    monkeypatch.chdir(elsewhere)
    assert main(["train", str(project / "run"), "--resume", "--quiet", "--no-eval"]) == 2
    assert f"reads paths relative to {project}, where it trained" in capsys.readouterr().err
    monkeypatch.chdir(project)
    assert main(["train", str(project / "run"), "--resume", "--quiet", "--no-eval"]) == 0  # from there it does


def test_a_config_edited_before_the_first_checkpoint_is_the_one_trained(tiny_corpus_dir, tmp_path):
    """No checkpoint yet: the resume starts at step 0 with the edited config's tokenizers and id table, not the
    copies the first start saved (they described the old config)."""
    edited = {"languages": {"kind": "clone", "num_clones": 1, "p": 0.5, "frac_clone": 0.5}, "train": {"steps": 6}}
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 6}), run).fit(progress=False, stop_at=2)  # before step 4
    assert not RunDir(run).checkpoint_dirs()
    data = yaml.safe_load((run / "config.yaml").read_text())
    data["languages"]["frac_clone"] = 0.5  # edited by hand before the first checkpoint
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    Trainer(RunDir(run).read_config(), run).fit(resume=True, progress=False)
    fresh = tmp_path / "fresh"
    Trainer(tiny_config(tiny_corpus_dir, **edited), fresh).fit(progress=False)
    losses = [[r["loss"] for r in RunDir(d).read_metrics() if "loss" in r] for d in (run, fresh)]
    assert losses[0] == losses[1]
    assert json.loads((run / "run.json").read_text())["saved_languages"] == \
        json.loads((fresh / "run.json").read_text())["saved_languages"]


def test_a_run_another_process_trains_is_refused(tiny_corpus_dir, tmp_path, capsys):
    import subprocess
    import sys

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 8}), run).fit(progress=False, stop_at=4)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"  # as another `xling train` does
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "os.ftruncate(fd, 0)\n"  # (a shorter pid than the last holder's, after pids wrapped)
                               "os.write(fd, f'{os.getpid()}\\n'.encode())\nprint('held', flush=True)\ntime.sleep(60)",
                               str(RunDir(run).lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", str(run), "--resume", "--quiet", "--no-eval"]) == 2
        out, err = capsys.readouterr()
        assert "resuming" not in out and err.count("\n") == 1  # one line, nothing announced first
        assert f"is being trained by process {holder.pid}" in err
        # a new start into it is told the same (not "pass --resume", which would be refused)
        with pytest.raises(XlingError, match=f"is being trained by process {holder.pid}"):
            Trainer(tiny_config(tiny_corpus_dir, train={"steps": 8}), run).fit(progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert [r["step"] for r in RunDir(run).read_metrics() if "loss" in r] == [1, 2, 3, 4]  # nothing trained twice
    assert main(["train", str(run), "--resume", "--quiet", "--no-eval"]) == 0  # once it is free


def test_a_received_run_whose_checkpoints_link_elsewhere_is_refused(tiny_corpus_dir, tmp_path, capsys):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 8}), run).fit(progress=False, stop_at=4)
    (run / "checkpoints").rename(elsewhere)
    (run / "checkpoints").symlink_to(elsewhere)  # training would write and prune there
    before = sorted(p.name for p in elsewhere.iterdir())
    assert main(["train", str(run), "--resume", "--quiet", "--no-eval"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in elsewhere.iterdir()) == before


def test_a_checkpoint_copied_under_another_steps_name_is_not_that_step(tiny_corpus_dir, tmp_path, caplog):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 8}), run).fit(progress=False, stop_at=4)
    shutil.copytree(run / "checkpoints" / "step_0000004", run / "checkpoints" / "step_9999999")
    assert RunDir(run).latest_checkpoint().name == "step_0000004"
    assert "its manifest is of step 4, not 9999999" in caplog.text


def test_a_run_that_fails_while_training_is_not_left_running(tiny_corpus_dir, tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    trainer = Trainer(tiny_config(tiny_corpus_dir, train={"steps": 8}), tmp_path / "run")
    monkeypatch.setattr(trainer.run, "save_checkpoint", full)  # the disk fills at the first checkpoint
    with pytest.raises(OSError):
        trainer.fit(progress=False)
    info = RunDir(tmp_path / "run").read_info()
    assert info["status"] == "failed" and "No space left" in info["error"]


def test_a_resume_computes_with_the_thread_count_the_run_trained_with(tiny_corpus_dir, tmp_path, caplog,
                                                                      monkeypatch):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 8}), run).fit(progress=False, stop_at=4)
    threads = torch.get_num_threads()
    assert RunDir(run).read_info()["threads"] == threads
    seen, real_step = set(), Trainer.train_step

    def step(self, n):
        seen.add(torch.get_num_threads())
        return real_step(self, n)

    monkeypatch.setattr(Trainer, "train_step", step)
    torch.set_num_threads(threads + 1)  # (a study's rerun with fewer runs left gives each more threads)
    try:
        Trainer(tiny_config(tiny_corpus_dir, train={"steps": 8}), run).fit(resume=True, progress=False)
        assert torch.get_num_threads() == threads + 1  # this process's setting is back
    finally:
        torch.set_num_threads(threads)
    assert seen == {threads}  # the resumed steps summed in the run's own order
    assert f"resuming with the {threads} thread(s) it trained with, not {threads + 1}" in caplog.text
    assert RunDir(run).read_info()["threads"] == threads


@pytest.mark.parametrize("crafted", ["a pickle as model.safetensors", "integer weights", "ids beyond the model's",
                                     "a huge model_vocab"])
def test_a_received_run_with_crafted_files_and_matching_checksums_is_one_line(tiny_corpus_dir, tmp_path, capsys,
                                                                             crafted):
    """Checksums only say a file is the one run.json names; what a received run names is checked like any input."""
    import hashlib
    import pickle

    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), run).fit(progress=False)
    info = json.loads((run / "run.json").read_text())
    if crafted == "a pickle as model.safetensors":
        ckpt = RunDir(run).checkpoint_dirs()[-1]
        (ckpt / "model.safetensors").write_bytes(pickle.dumps({"not": "tensors"}))
        manifest = json.loads((ckpt / "manifest.json").read_text())
        manifest["sha256"]["model.safetensors"] = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
        (ckpt / "manifest.json").write_text(json.dumps(manifest))
    elif crafted == "integer weights":  # (load_state_dict would cast them and score them as the run's)
        ckpt = RunDir(run).checkpoint_dirs()[-1]
        weights = {name: tensor.long() for name, tensor in load_file(str(ckpt / "model.safetensors")).items()}
        save_file(weights, str(ckpt / "model.safetensors"))
        manifest = json.loads((ckpt / "manifest.json").read_text())
        manifest["sha256"]["model.safetensors"] = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
        (ckpt / "manifest.json").write_text(json.dumps(manifest))
    elif crafted == "ids beyond the model's":
        table = run / info["saved_languages"]["table"]["file"]
        save_file({"table": torch.full((2, 320), 10**12, dtype=torch.long)}, str(table))
        info["saved_languages"]["table"]["sha256"] = hashlib.sha256(table.read_bytes()).hexdigest()
    else:
        info["saved_languages"]["model_vocab"] = 10**9
    (run / "run.json").write_text(json.dumps(info))
    if crafted == "a huge model_vocab":  # the copies are refused; the config's own tokenizers match the run's: used
        assert main(["eval", str(run)]) == 0
        assert "does not fit the run (2 languages, model_vocab 1000000000)" in capsys.readouterr().err
        return
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("xling: error: ") and "Traceback" not in "\n".join(err)
    if crafted == "integer weights":
        assert "as torch.int64, not the model's torch.float32" in err[-1]


def test_training_goes_on_with_a_warning_where_file_locks_do_not_work(tiny_corpus_dir, tmp_path, monkeypatch, caplog):
    import errno

    from xling.train import lock

    def unsupported(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(lock.fcntl, "flock", unsupported)  # Lustre without -o flock, some FUSE mounts
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), tmp_path / "run").fit(progress=False, stop_at=2)
    assert "file locks do not work under" in caplog.text
    info = Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), tmp_path / "run").fit(resume=True, progress=False)
    assert info["status"] == "completed"  # (the resume asks whether another process holds the run: none can)


def test_checkpoints_linked_out_of_a_new_run_are_refused_at_its_start(tiny_corpus_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "scratch").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(tmp_path / "scratch")
    with pytest.raises(XlingError, match="is a symbolic link"):  # (not accepted now and refused at every resume)
        Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), tmp_path / "run").fit(progress=False)


def test_a_received_run_cannot_make_xling_write_outside_it(tiny_corpus_dir, tmp_path, capsys):
    """Links in a received run: its .lock (was emptied and given a process id through the link), alignment/ and
    tensorboard/ (were written through) are refused in one line, and nothing outside the run changes."""
    from xling.analysis.alignment import align_run

    run, victim, elsewhere = tmp_path / "run", tmp_path / "victim", tmp_path / "elsewhere"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 8}), run).fit(progress=False, stop_at=4)
    victim.write_text("keep")
    elsewhere.mkdir()
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(victim)
    assert main(["train", str(run), "--resume", "--quiet", "--no-eval"]) == 2
    assert ".lock is a symbolic link" in capsys.readouterr().err and victim.read_text() == "keep"
    (run / ".lock").unlink()
    os.link(victim, run / ".lock")  # a hard link: the same, by another way
    assert main(["train", str(run), "--resume", "--quiet", "--no-eval"]) == 2
    assert ".lock is a hard link to another file" in capsys.readouterr().err and victim.read_text() == "keep"
    (run / ".lock").unlink()
    for name in ("alignment", "tensorboard"):
        (run / name).symlink_to(elsewhere)
        with pytest.raises(XlingError, match=f"{name} is a symbolic link"):
            if name == "alignment":
                align_run(run, sequences=2, grad_sequences=0, figures=False)
            else:
                from xling.study.exports import export_run
                export_run(run, "tensorboard")
        (run / name).unlink()
    assert not any(elsewhere.iterdir())
    # run.json of the wrong types (were tracebacks), and text that would drive the terminal (was printed raw)
    info = json.loads((run / "run.json").read_text())
    for crafted in ({"steps": "30"}, {"step": 1e30}, {"step": -5}, {"status": "\x1b[2J\x1b[31mPWNED"},
                    {"status": "bogus"}):  # (a word, shown as the run's state)
        (run / "run.json").write_text(json.dumps({**info, **crafted}))
        capsys.readouterr()
        assert main(["eval", str(run), "--max-tokens", "0"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "run.json: its " in err and "\x1b" not in err, err
        assert main(["status", str(run)]) == 0 and "damaged" in capsys.readouterr().out
    (run / "run.json").write_text("{}")  # emptied: it read as a run not started, beside its checkpoints
    assert main(["status", str(run)]) == 0 and "run.json holds no status (emptied): `xling train" in \
        capsys.readouterr().out
    (run / "run.json").write_text(json.dumps(info))


def test_weights_that_are_not_numbers_are_said_not_scored(tiny_corpus_dir, tmp_path):
    """A checkpoint of NaN weights (its checksums made to match): eval refuses rather than write perplexities of nan
    (which read as a result and broke a study's report), sampling says so, and an eval.json of nan perplexities over
    scored tokens is damaged; an empty config.yaml is said to be empty (it read as every default)."""
    from safetensors.torch import load_file, save_file

    from xling.train.evaluate import evaluate_run

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), run).fit(progress=False)
    good, _ = evaluate_run(run, max_tokens=0)
    ckpt = RunDir(run).checkpoint_dirs()[-1]
    weights = load_file(ckpt / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, ckpt / "model.safetensors")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["sha256"]["model.safetensors"] = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(XlingError, match="the checkpoint's weights are not finite numbers"):
        evaluate_run(run, max_tokens=0)
    assert json.loads((run / "eval.json").read_text()) == good  # nothing written
    with pytest.raises(XlingError, match="its weights are not finite"):
        Run(run).sample("L1", prompt="the")
    nan = {**good, "languages": {k: {**v, "ppl": float("nan")} for k, v in good["languages"].items()}}
    (run / "eval.json").write_text(json.dumps(nan))
    with pytest.raises(XlingError, match="not a number >= 1"):
        RunDir(run).read_evaluation(run / "eval.json", tolerant=False)
    (run / "config.yaml").write_text("")
    with pytest.raises(XlingError, match=r"config\.yaml is empty"):
        RunDir(run).read_config()


def test_links_within_a_run_are_its_own(tiny_corpus_dir, tmp_path):
    """A link that stays inside the run (W&B's wandb/latest-run) is no reason to refuse it."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), run).fit(progress=False, stop_at=2)
    (run / "wandb" / "run-1").mkdir(parents=True)
    (run / "wandb" / "latest-run").symlink_to("run-1")
    info = Trainer(tiny_config(tiny_corpus_dir, train={"steps": 4}), run).fit(resume=True, progress=False)
    assert info["status"] == "completed"
