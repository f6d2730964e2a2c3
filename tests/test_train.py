"""Training end to end on a tiny corpus: data stream, accounting, checkpoints and exact resume."""

import itertools
import json

import numpy as np
import pytest
import torch

from conftest import run_losses, tiny_config
from xling.data.mixture import language_plan
from xling.data.stream import TrainStream, budget_steps, decode_ids, encode_text, prepare_languages
from xling.errors import XlingError
from xling.train.evaluate import evaluate_run
from xling.train.rundir import RunDir
from xling.train.session import load_session
from xling.train.trainer import Trainer, lr_at


def test_stream_is_a_pure_function_of_rows(tiny_corpus_dir):
    cfg = tiny_config(tiny_corpus_dir)
    setup = prepare_languages(cfg)
    plan = language_plan(0, 10, 8, 0.5, "", 1)
    stream = TrainStream(setup, plan, seq_len=32, seed=0)
    x, y, langs = stream.rows(0, 16)
    x2, y2, langs2 = TrainStream(setup, plan, 32, 0).rows(8, 16)  # a fresh stream, a later slice
    assert torch.equal(x[8:], x2) and torch.equal(y[8:], y2) and torch.equal(langs[8:], langs2)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    V = setup.tokenizers[0].vocab_size
    for row, lang in zip(x, langs):  # every token of a row is in that row's language
        nonpad = row[row != 0]
        assert ((nonpad >= lang * V) & (nonpad < (lang + 1) * V)).all()


def test_one_pass_uses_every_window_once(tiny_corpus_dir):
    cfg = tiny_config(tiny_corpus_dir)
    setup = prepare_languages(cfg)
    steps = budget_steps(setup, cfg)
    plan = language_plan(0, steps, 8, 0.5, "", 1)
    stream = TrainStream(setup, plan, 32, 0)
    windows = stream.windows_of(0, steps * 8)
    assert len(set(windows.tolist())) == steps * 8  # no window repeated within a pass
    assert stream.epochs(steps * 8)[0] <= 1.0
    more = TrainStream(setup, language_plan(0, 2 * steps, 8, 0.5, "", 1), 32, 0)
    assert stream.epochs(steps * 8)[0] < more.epochs(2 * steps * 8)[0] <= 2.0  # a second pass is counted


def test_a_pinned_budget_sets_1x_whatever_the_corpus_size(tiny_corpus_dir, tmp_path):
    """train.budget_tokens pins T (the paper's 1x is 18,265 steps of 128 x 512, not one pass over whatever corpus
    is given): data_fraction counts against it, run.json records it for the report's training length, and a budget
    below one step is refused."""
    from xling.config import validate
    from xling.train.trainer import Trainer

    cfg = tiny_config(tiny_corpus_dir)
    setup = prepare_languages(cfg)
    one_pass = budget_steps(setup, cfg)
    pinned = tiny_config(tiny_corpus_dir, train={"budget_tokens": 3 * one_pass * 8 * 32 + 100, "data_fraction": 0.02, "steps": 0})
    assert budget_steps(setup, pinned) == 3 * one_pass  # whole steps
    info = Trainer(pinned, tmp_path / "run").fit(progress=False)
    assert info["budget_tokens"] == 3 * one_pass * 8 * 32 and info["steps"] == round(0.02 * 3 * one_pass)
    with pytest.raises(XlingError, match=r"train.budget_tokens \(255\) is less than one step \(8 x 32 tokens\)"):
        validate(tiny_config(tiny_corpus_dir, train={"budget_tokens": 255}))


def test_lr_schedule_warmup_and_cosine():
    assert lr_at(0, 100, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 0.1, 10) == pytest.approx(0.1)
    values = [lr_at(s, 100, 1.0, 0.1, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_run_writes_config_metrics_checkpoints_and_token_counts(tiny_run):
    run = RunDir(tiny_run)
    info = run.read_info()
    assert info["status"] == "completed" and info["step"] == 12
    assert sum(info["tokens"].values()) == 12 * 8 * 32  # every trained token is accounted to a language
    assert set(info["tokens"]) == {"L1", "L2"}
    assert [p.name for p in run.checkpoint_dirs()] == ["step_0000008", "step_0000012"]
    losses = run_losses(tiny_run)
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert "ppl/L1" in run.read_metrics()[-1]


def test_resumed_run_reproduces_uninterrupted_losses_exactly(tiny_corpus_dir, tiny_run, tmp_path):
    cfg = tiny_config(tiny_corpus_dir)
    out = tmp_path / "resumed"
    first = Trainer(cfg, out).fit(progress=False, stop_at=6)  # "killed" after step 6 (checkpoint at 4)
    assert first["status"] == "interrupted"
    Trainer(cfg, out).fit(resume=True, progress=False)
    assert run_losses(out) == run_losses(tiny_run)  # bit-identical, including the re-done steps 5 and 6
    a = RunDir(out).checkpoint_dirs()[-1] / "model.safetensors"
    b = RunDir(tiny_run).checkpoint_dirs()[-1] / "model.safetensors"
    assert a.read_bytes() == b.read_bytes()


def test_a_run_with_a_relative_corpus_path_is_read_from_anywhere_and_resumes_where_it_trained(
        tiny_corpus_dir, tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tiny_corpus_dir.parent)
    relative = tiny_config(tiny_corpus_dir.name)  # as a user writes it: relative to where xling runs
    out = tmp_path / "relative"
    Trainer(relative, out).fit(progress=False, stop_at=6)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["corpus"]["paths"] == [tiny_corpus_dir.name]  # as written: a project moved whole still resumes
    Trainer(relative, out).fit(resume=True, progress=False)
    monkeypatch.chdir(tmp_path)  # elsewhere, the run's relative paths are found where it trained
    assert set(evaluate_run(out, max_tokens=0)[0]["languages"]) == {"L1", "L2"}
    RunDir(out).update_info(workdir=str(tmp_path / "moved"))  # the project moved: the error names where it looked
    with pytest.raises(XlingError, match=f"corpus path {tmp_path / 'moved' / tiny_corpus_dir.name} does not exist"):
        evaluate_run(out, max_tokens=0)


def test_relative_paths_resolve_where_the_run_trained_but_names_and_home_paths_stay(tmp_path, monkeypatch):
    from xling.config import from_dict
    from xling.identity import resolve_relative

    (tmp_path / "proj" / "data").mkdir(parents=True)
    for name in ("a", "v", "t"):
        (tmp_path / "proj" / "data" / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    workdir = str(tmp_path / "proj")
    own = resolve_relative(from_dict({"corpus": {"name": "jsonl", "paths": ["data/a"], "valid": ["data/v"],
                                                 "test": ["data/t"]}, "tokenizer": {"path": "~/tok.model"}}), workdir)
    assert (own.corpus.paths, own.corpus.valid, own.corpus.test) == ([f"{workdir}/data/a"], [f"{workdir}/data/v"],
                                                                     [f"{workdir}/data/t"])
    assert own.tokenizer.path == "~/tok.model"  # a home path is not relative
    hf = resolve_relative(from_dict({"corpus": {"name": "hf", "paths": ["wikitext:wikitext-2-raw-v1"]}}), workdir)
    assert hf.corpus.paths == ["wikitext:wikitext-2-raw-v1"]  # a dataset's name in the local cache, not a path
    (tmp_path / "proj" / "bench").mkdir()
    split = resolve_relative(from_dict({"corpus": {"name": "hf", "paths": ["bench@train"], "valid": ["bench@valid"],
                                                   "test": ["bench@test"]}}), workdir)
    assert split.corpus.paths == [f"{workdir}/bench@train"] and split.corpus.test == [f"{workdir}/bench@test"]
    many = resolve_relative(from_dict({"corpus": {"name": "text"}, "languages": {"kind": "real",
                                                                                 "corpora": ["data/a", "data/v"]}}), workdir)
    assert many.languages.corpora == [f"{workdir}/data/a", f"{workdir}/data/v"]


def test_gradient_accumulation_sees_the_same_data(tiny_corpus_dir, tiny_run, tmp_path):
    cfg = tiny_config(tiny_corpus_dir, train={"grad_accum": 2})
    Trainer(cfg, tmp_path / "accum").fit(progress=False)
    np.testing.assert_allclose(run_losses(tmp_path / "accum"), run_losses(tiny_run), rtol=1e-4)


def test_existing_run_dir_needs_resume_and_the_same_config(tiny_corpus_dir, tiny_run):
    with pytest.raises(XlingError, match="already exists: pass --resume"):
        Trainer(tiny_config(tiny_corpus_dir), tiny_run).fit(progress=False)
    with pytest.raises(XlingError, match=r"differs .* languages.p"):
        Trainer(tiny_config(tiny_corpus_dir, languages={"p": 0.1}), tiny_run).fit(resume=True, progress=False)


def test_damaged_latest_checkpoint_falls_back_to_the_previous(tiny_corpus_dir, tiny_run, tmp_path, caplog):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(tiny_run, out)
    run = RunDir(out)
    latest = run.checkpoint_dirs()[-1]
    (latest / "model.safetensors").write_bytes(b"garbage")
    assert run.latest_checkpoint() == run.checkpoint_dirs()[0]
    assert "checksum mismatch" in caplog.records[0].getMessage() and caplog.records[0].levelname == "WARNING"


def test_eval_writes_per_language_perplexity(tiny_run):
    report, path = evaluate_run(tiny_run)
    assert path.name == "eval.json" and json.loads(path.read_text())["languages"] == report["languages"]
    l1, l2 = report["languages"]["L1"], report["languages"]["L2"]
    assert l1["tokens_scored"] == l2["tokens_scored"] > 0  # the clone's test set is the same text
    assert 1 < l1["ppl"] < 320 * 2


def test_clone_text_round_trips_through_the_id_table(tiny_run):
    session = load_session(tiny_run)
    text = "The king saw the house."
    en1 = encode_text(session.setup, 0, text)
    en2 = encode_text(session.setup, 1, text)
    V = session.setup.tokenizers[0].vocab_size
    assert torch.equal(en2, en1 + V)
    assert decode_ids(session.setup, 1, en2) == decode_ids(session.setup, 0, en1) == text


def test_non_finite_loss_stops_with_a_diagnostic_and_marks_the_run_failed(tiny_corpus_dir, tmp_path, monkeypatch):
    real_step = Trainer.train_step

    def diverge_at_step_7(self, step):
        loss = real_step(self, step)
        return loss * float("nan") if step + 1 >= 7 else loss

    monkeypatch.setattr(Trainer, "train_step", diverge_at_step_7)
    cfg = tiny_config(tiny_corpus_dir, train={"log_every": 5})  # checkpoints every 4 steps
    with pytest.raises(XlingError) as err:
        Trainer(cfg, tmp_path / "nan").fit(progress=False)
    message = str(err.value)
    assert "at step 7" in message and "last good checkpoint: step_0000004" in message
    assert "sequences per language: L1 " in message
    info = RunDir(tmp_path / "nan").read_info()
    assert info["status"] == "failed" and "step 7" in info["error"]
    assert [p.name for p in RunDir(tmp_path / "nan").checkpoint_dirs()] == ["step_0000004"]  # no diverged checkpoint


def test_a_run_written_by_a_newer_xling_says_so(tiny_run, tmp_path):
    """A config key this version does not know, in a run a newer xling wrote: the error names
    both versions instead of suggesting a typo only."""
    import shutil

    from xling.train.rundir import RunDir

    run = RunDir(shutil.copytree(tiny_run, tmp_path / "run"))
    run.config_path.write_text(run.config_path.read_text().replace("train:\n", "train:\n  future_knob: 3\n", 1))
    with pytest.raises(XlingError, match=r"unknown key 'train\.future_knob'") as plain:
        run.read_config()
    assert "written by" not in str(plain.value)  # same version: a typo, not an old xling
    run.update_info(xling_version="9.0.0")
    with pytest.raises(XlingError, match=r"written by xling 9\.0\.0 and this is xling 0\."):
        run.read_config()


def test_compile_leaves_the_loss_softmax_eager_on_the_cpu(tiny_corpus_dir, tmp_path):
    """`train.compile` compiles the loss's softmax on a GPU only (on a CPU it did not pay; tests/test_gpu.py)."""
    trainer = Trainer(tiny_config(tiny_corpus_dir, train={"compile": True, "device": "cpu"}), tmp_path / "c")
    trainer.prepare(resume=False)
    assert trainer.model.fused_softmax is False


def test_more_torchrun_processes_than_gpus_is_one_clear_line(monkeypatch):
    from xling.train.session import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(XlingError, match=r"process 1 of this machine has no GPU of its own: it has 1; .*--nproc_per_node"):
        pick_device("auto", local_rank=1)
    with pytest.raises(XlingError, match="device cuda:3: this machine has 1 GPU"):
        pick_device("cuda:3")


def test_a_warmup_as_long_as_the_run_is_warned_about(tiny_corpus_dir, tmp_path, caplog):
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 3, "warmup": 5}), tmp_path / "short").fit(progress=False)
    assert "train.warmup (5) is not below the run's 3 steps" in caplog.text
    caplog.clear()
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 3, "warmup": 2}), tmp_path / "ok").fit(progress=False)
    assert "warmup" not in caplog.text


def test_a_run_that_reads_its_text_more_than_once_is_warned_about(tiny_corpus_dir, tmp_path, caplog):
    cfg = tiny_config(tiny_corpus_dir, languages={"p": 0.0}, train={"steps": 0, "data_fraction": 1.5})
    info = Trainer(cfg, tmp_path / "long").fit(progress=False)
    assert info["data_epochs"]["L1"] > 1.4 and "more than once: L1 1.49 passes" in caplog.text  # (L2, not trained, reads none)
    caplog.clear()
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 0, "data_fraction": 1.5}), tmp_path / "mixed").fit(progress=False)
    assert "the text of L1, L2 (clones read one text)" in caplog.text  # p = 0.5: both read the one text
    caplog.clear()
    Trainer(tiny_config(tiny_corpus_dir, train={"steps": 3}), tmp_path / "short").fit(progress=False)
    assert "more than once" not in caplog.text


def test_a_model_that_does_not_fit_in_memory_is_one_line(tiny_corpus_dir, tmp_path, monkeypatch):
    from xling.train import session

    def too_big(dims):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(session, "GPT", too_big)
    with pytest.raises(XlingError, match=r"does not fit in cpu memory: choose a smaller model.preset"):
        Trainer(tiny_config(tiny_corpus_dir, train={"steps": 2}), tmp_path / "run").fit(progress=False)
    assert not (tmp_path / "run").exists()  # nothing written
