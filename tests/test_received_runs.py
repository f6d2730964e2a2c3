"""A run received from someone else, crafted: what it holds is checked like any input. Nothing of it runs, nothing is
read or written through a link out of it, no read waits forever, and each crafted file is one line (exit status 2)."""

import json
import os
import shutil
import signal

import pytest

from xling.cli import main
from xling.errors import XlingError
from xling.fsio import read_json, sha256_file
from xling.train.rundir import RunDir


@pytest.fixture
def received(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "received")


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def _one_line(capsys, *argv, says: str):
    code, err = _cli(capsys, *argv)
    assert code == 2 and err[-1].startswith("xling: error: ") and says in err[-1], err
    assert "Traceback" not in "\n".join(err)


def _newest(run):
    return RunDir(run).checkpoint_dirs()[-1]


def _resign(ckpt, name):
    """Make the manifest's checksum match a crafted file, as a sender would."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["sha256"][name] = sha256_file(ckpt / name)
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def alarm():
    """A read that would wait forever fails the test instead of hanging the suite."""
    def timed_out(*_):
        raise TimeoutError("a read waited on a FIFO")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_fifo_or_a_device_where_a_file_should_be_is_never_read(received, tmp_path, capsys, alarm):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert read_json(fifo, default={"missing": True}) == {"missing": True}
    with pytest.raises(XlingError, match="not a regular file"):
        read_json(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        sha256_file(fifo)
    (received / "run.json").unlink()
    os.mkfifo(received / "run.json")
    assert _cli(capsys, "status", received)[0] == 0
    from xling.study.state import status_rows

    row = status_rows([received])[0]
    assert row["state"] == "damaged" and "run.json is not a regular file" in row["error"]


@pytest.mark.parametrize("digests, says", [
    (["x"], "its manifest's sha256 lacks the weights' digest or names other files"),
    ({"../../outside": "0" * 64}, "its manifest's sha256 lacks the weights' digest or names other files"),
    ({}, "its manifest's sha256 lacks the weights' digest or names other files"),  # (the weights unchecked)
])
def test_a_manifest_of_other_shapes_or_naming_files_outside_is_damaged(received, capsys, digests, says):
    for ckpt in RunDir(received).checkpoint_dirs():
        manifest = json.loads((ckpt / "manifest.json").read_text())
        (ckpt / "manifest.json").write_text(json.dumps({**manifest, "sha256": digests}))
    code, err = _cli(capsys, "eval", received)
    assert code == 2 and "no checkpoint of" in err[-1] and any(says in line for line in err[:-1]), err


def test_a_manifest_step_that_is_no_number_says_so(received):
    ckpt = _newest(received)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    (ckpt / "manifest.json").write_text(json.dumps({**manifest, "step": str(manifest["step"])}))
    assert RunDir(received).checkpoint_problem(ckpt).startswith("its manifest's step is a str, not the number ")


@pytest.mark.parametrize("record", [{"tokenizers": 5}, {"tokenizers": [5]}, {"table": 5}, {"table": [1]}])
def test_a_malformed_record_of_the_runs_own_tokenizers_is_one_line(received, capsys, record):
    info = json.loads((received / "run.json").read_text())
    info["saved_languages"].update(record)
    (received / "run.json").write_text(json.dumps(info))
    _one_line(capsys, "eval", received, says="a malformed saved_languages entry")


def test_weights_that_overflow_the_perplexity_are_one_line(received, capsys):
    from safetensors.torch import load_file, save_file

    ckpt = _newest(received)
    weights = load_file(str(ckpt / "model.safetensors"))
    save_file({name: tensor * 1000 for name, tensor in weights.items()}, str(ckpt / "model.safetensors"))
    _resign(ckpt, "model.safetensors")
    _one_line(capsys, "eval", received, says="no finite perplexity")
    assert not RunDir(received).eval_path().exists()  # nothing written


def test_non_finite_weights_are_not_exported(received, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    ckpt = _newest(received)
    weights = load_file(str(ckpt / "model.safetensors"))
    weights[next(iter(weights))][0] = float("nan")
    save_file(weights, str(ckpt / "model.safetensors"))
    _resign(ckpt, "model.safetensors")
    _one_line(capsys, "export", received, tmp_path / "hf", says="are not finite numbers")
    assert not (tmp_path / "hf").exists()


def test_a_config_asking_for_a_huge_model_is_refused_before_it_is_built(received, capsys, monkeypatch):
    from xling.train import session

    monkeypatch.setattr(session, "build_model", lambda *a: pytest.fail("the model was built"))
    for ckpt in RunDir(received).checkpoint_dirs():  # (the checkpoint's own config too: a sender writes both)
        manifest = json.loads((ckpt / "manifest.json").read_text())
        manifest["config"]["model"]["d_model"] *= 64
        (ckpt / "manifest.json").write_text(json.dumps(manifest))
    config = (received / "config.yaml").read_text()
    width = RunDir(received).read_config().model.d_model
    (received / "config.yaml").write_text(config.replace(f"d_model: {width}", f"d_model: {width * 64}"))
    _one_line(capsys, "eval", received, says="it does not match the run's model config")


def test_a_link_out_of_the_run_is_not_read(received, tmp_path, capsys, monkeypatch):
    from xling.train import session

    mine = tmp_path / "mine.yaml"
    mine.write_text((received / "config.yaml").read_text())
    (received / "config.yaml").unlink()
    (received / "config.yaml").symlink_to(mine)  # (its config read through the link: export and align parsed it)
    monkeypatch.setattr(session, "run_languages", lambda *a, **k: pytest.fail("the run's files were read"))
    monkeypatch.setattr(RunDir, "read_config", lambda *a, **k: pytest.fail("the run's config was read"))
    for command in (["sample", received, "--language", "L1", "--tokens", "3"], ["export", received, tmp_path / "hf"],
                    ["align", received, "--no-figures"], ["eval", received], ["transfer", received]):
        _one_line(capsys, *command, says="is a symbolic link")


@pytest.mark.parametrize("crafted", [{"optimizer_values": [1]}, {"param_groups": "x"}, {"step": None},
                                     {"param_groups": [{"params": [0], "lr": "fast"}]}])
def test_a_crafted_training_state_is_one_line_at_resume(interrupted_copy, capsys, crafted):
    ckpt = _newest(interrupted_copy)
    meta = json.loads((ckpt / "training.json").read_text())
    if crafted.get("step", 0) is None:
        meta.pop("step")
    else:
        meta.update(crafted)
    (ckpt / "training.json").write_text(json.dumps(meta))
    _resign(ckpt, "training.json")
    _one_line(capsys, "train", interrupted_copy, "--resume", "--quiet", "--no-eval",
              says="is not one xling wrote")


@pytest.fixture
def interrupted_copy(tiny_corpus_dir, tmp_path):
    from conftest import tiny_config
    from xling.train.trainer import Trainer

    out = tmp_path / "stopped"
    Trainer(tiny_config(tiny_corpus_dir), out).fit(progress=False, stop_at=5)
    return out


@pytest.mark.parametrize("record", [{"study": ["a"], "id": "x"}, {"study": "s", "id": "x", "attempts": "many"}])
def test_a_study_record_of_other_types_is_damaged_not_a_traceback(received, capsys, record):
    from xling.study.state import status_rows

    (received / "study.json").write_text(json.dumps(record))
    assert _cli(capsys, "status", received)[0] == 0
    row = status_rows([received])[0]
    assert row["state"] == "damaged" and "study.json cannot be read" in row["error"] and row["study"] == ""


@pytest.mark.parametrize("crafted", [{"languages": 5}, {"languages": [1, "a"]}, {"hidden": 5}, {"step": "9"}])
def test_a_crafted_alignment_is_computed_again_not_read(received, capsys, crafted):
    assert _cli(capsys, "align", received, "--no-figures", "--sequences", "2", "--grad-sequences", "0")[0] == 0
    path = RunDir(received).alignment_path
    good = read_json(path)
    path.write_text(json.dumps({**good, **crafted}))
    code, _ = _cli(capsys, "align", received, "--reuse", "--no-figures", "--sequences", "2", "--grad-sequences", "0")
    again = read_json(path)
    assert code == 0 and again["hidden"] == good["hidden"] and again["step"] == good["step"]  # computed again


def test_an_alignment_of_an_earlier_checkpoint_is_not_reused(received, capsys):
    from xling.analysis.alignment import stored_pair

    assert _cli(capsys, "align", received, "--no-figures", "--sequences", "2", "--grad-sequences", "0")[0] == 0
    path = RunDir(received).alignment_path
    assert stored_pair(received, None)[1]  # of the newest checkpoint: reused
    path.write_text(json.dumps({**read_json(path), "step": 1}))  # as written while the run was still training
    assert stored_pair(received, None)[1] == {}


def test_a_brought_tokenizer_that_panics_or_cannot_encode_is_one_line(tmp_path):
    from tokenizers import Tokenizer, models

    from xling.data.brought import HFTokenizer, load_brought

    vocab = {"<eod>": 0, "a": 1, "b": 2}
    plain = json.loads(Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).to_str())  # <unk> not in its vocabulary
    panics = {**plain, "normalizer": {"type": "Precompiled", "precompiled_charsmap": "//////////8="}}
    (tmp_path / "panics.json").write_text(json.dumps(panics))
    with pytest.raises(XlingError, match=r"neither a SentencePiece model nor a Hugging Face tokenizer\.json"):
        load_brought(str(tmp_path / "panics.json"))
    with pytest.raises(XlingError, match="cannot encode the text"):
        HFTokenizer(json.dumps(plain).encode()).encode(["a c"])


def test_a_brought_tokenizers_padding_and_truncation_are_not_applied():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from xling.data.brought import HFTokenizer

    tok = Tokenizer(models.WordLevel({"<eod>": 0, "<pad>": 1, "a": 2}, unk_token="<eod>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_truncation(max_length=3)  # (a file made for a classifier: xling would lose every document's rest)
    tok.enable_padding(length=8, pad_id=1)
    hf = HFTokenizer(tok.to_str().encode())
    assert hf.encode(["a a a a a"]) == [[2] * 5] and hf.encode(["a a a a a"], threads=1) == [[2] * 5]


def test_a_transfer_of_another_checkpoint_is_done_again(received):
    from xling.report.alignment_results import _transferred

    run = RunDir(received)
    step = run.newest_checkpoint_step()
    path = run.transfer_path("bible-parts", "L1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"accuracy": {"L1": 0.5}, "step": step}))
    assert _transferred(run, "bible-parts", "L1")
    path.write_text(json.dumps({"accuracy": {"L1": 0.5}, "step": step - 1}))
    assert not _transferred(run, "bible-parts", "L1")
    path.write_text(json.dumps({"accuracy": 5, "step": step}))  # (crafted: read as missing)
    assert not _transferred(run, "bible-parts", "L1")
    path.write_text(json.dumps({"accuracy": {"L1": 0.5}}))  # (before 2026-11-29: no step recorded, kept)
    assert _transferred(run, "bible-parts", "L1")


def test_a_result_of_the_checkpoint_used_when_the_newest_is_damaged_is_current(received, monkeypatch):
    """Where the newest checkpoint does not verify, commands load the one before: results of that one are the run's
    (compared with the newest's step they were computed again on every align-report and never reported)."""
    from xling.analysis.alignment import stored_pair

    run = RunDir(received)
    older, newest = run.checkpoint_dirs()[-2:]
    (newest / "training.json").write_text("{}")  # (damaged: its checksum no longer matches)
    hashed = []
    real = RunDir.checkpoint_problem
    monkeypatch.setattr(RunDir, "checkpoint_problem", lambda self, ckpt: hashed.append(ckpt) or real(self, ckpt))
    assert run.is_current_step(int(older.name[5:])) and not run.is_current_step(int(older.name[5:]) - 1)
    assert len(hashed) == 2 and RunDir(received).is_current_step(int(older.name[5:])) and len(hashed) == 2  # once
    main(["align", str(received), "--no-figures", "--sequences", "2", "--grad-sequences", "0"])
    assert stored_pair(received, None)[1]["step"] == int(older.name[5:])


def test_arrays_encoded_with_a_tokenizer_jsons_truncation_are_not_reused(monkeypatch):
    """Token arrays an older xling encoded with the file's own truncation (documents cut) have another key."""
    from types import SimpleNamespace

    from xling.data import token_arrays

    monkeypatch.setattr(token_arrays, "corpus_fingerprint", lambda corpus, split: "the corpus")
    sp, hf = (SimpleNamespace(kind=kind, sha256="same") for kind in ("sp", "hf"))
    old_key = token_arrays.json_key({"corpus": "the corpus", "tokenizer": "same", "split": "train",
                                     "format": token_arrays.FORMAT_VERSION})
    assert token_arrays.array_key(None, "train", sp) == old_key  # SentencePiece's arrays stay cached
    assert token_arrays.array_key(None, "train", hf) != old_key
