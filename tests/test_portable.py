"""Bring your own tokenizer, portable run directories and the Hugging Face export (issue 12, items 3-5).

Every tokenizer here is made by the test: a SentencePiece BPE model with SentencePiece's default
specials (unk 0, BOS 1, EOS 2, no pad), and a tokenizers-library BPE tokenizer.json.
"""

from __future__ import annotations

import io
import json
import math
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import torch

from conftest import make_documents, tiny_config
from xling.cli import main
from xling.data.corpora import hash_split
from xling.data.languages import merge_table
from xling.data.stream import encode_text, prepare_languages
from xling.errors import XlingError
from xling.fsio import temporary_beside
from xling.train.evaluate import evaluate_run
from xling.train.rundir import RunDir
from xling.train.session import load_session
from xling.train.trainer import Trainer


def _corpus(root, docs):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (root / f"part{i}.txt").write_text("\n".join(docs[i::4]) + "\n", encoding="utf-8")
    return root


def _sentencepiece_file(path, docs):
    """A SentencePiece BPE model with SentencePiece's own defaults: <unk> 0, <s> 1, </s> 2, no pad."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(docs), model_writer=model, model_type="bpe",
                                   vocab_size=300, minloglevel=2)
    path.write_bytes(model.getvalue())
    return path


def _hf_file(path, docs):
    """A tokenizers-library BPE tokenizer.json (Metaspace pieces, as SentencePiece writes them)."""
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace()
    tok.decoder = tk.decoders.Metaspace()
    tok.train_from_iterator(docs, tk.trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>",
                                                                                         "<|endoftext|>"]))
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    return _corpus(root / "one", make_documents(200)), _corpus(root / "two", make_documents(200, seed=1)), root


def test_a_brought_sentencepiece_model_trains_a_clone_run(corpora, tmp_path):
    one, _, _ = corpora
    model = _sentencepiece_file(tmp_path / "own.model", make_documents(200))
    cfg = tiny_config(one, tokenizer={"path": str(model)}, languages={"frac_clone": 0.5},
                      train={"steps": 4, "checkpoint_every": 4})
    setup = prepare_languages(cfg)
    tok = setup.tokenizers[0]
    assert (tok.pad_id, tok.unk_id, tok.eod_id, tok.words) == (None, 0, 2, False)  # EOS </s> ends documents
    assert tok.vocab_size == 300 and setup.model_vocab == 600
    tokens = np.asarray(setup.tokens(0, "valid"))
    docs = make_documents(200)
    docs = tok.encode([d for i in range(4) for d in docs[i::4] if hash_split(d) == "valid"])  # in corpus order
    assert tokens.tolist() == [i for ids in docs for i in [*ids, 2]]
    assert setup.eod(1) in (2, 302)  # no pad: every id may be cloned, the end of document too
    info = Trainer(cfg, tmp_path / "run").fit(progress=False)
    assert info["status"] == "completed"
    assert (tmp_path / "run" / "tokenizers" / "0.model").read_bytes() == model.read_bytes()
    report, _ = evaluate_run(tmp_path / "run")
    assert all(math.isfinite(v["ppl"]) for v in report["languages"].values())


def test_a_brought_tokenizer_json_is_a_real_second_language_merged_by_piece_strings(corpora, tmp_path):
    one, two, _ = corpora
    second = _hf_file(tmp_path / "tokenizer.json", make_documents(200, seed=1))
    cfg = tiny_config(one, tokenizer={"second_path": str(second)},
                      languages={"kind": "real", "vocab": "anchored", "p": 0.5, "num_clones": 1,
                                 "second": {"name": "text", "paths": [str(two)], "doc_per_line": True}},
                      train={"steps": 4, "checkpoint_every": 4})
    setup = prepare_languages(cfg)
    first, hf = setup.tokenizers
    assert (hf.kind, hf.pad_id, hf.eod_id) == ("hf", 0, 2)
    table, size = merge_table(first.pieces(), hf.pieces(), "anchored", first.pad_id, hf.pad_id)
    assert torch.equal(setup.table, table) and setup.model_vocab == size
    shared = set(first.pieces()) & set(hf.pieces())
    assert len(shared) > 50 and "▁the" in shared  # one id in both languages
    for piece in shared:
        assert int(setup.table[1][hf.pieces().index(piece)]) == first.pieces().index(piece)
    # a document's "<|endoftext|>" is text; documents end with the end-of-document id
    assert 2 not in hf.encode(["the king <|endoftext|> saw"])[0]
    assert np.asarray(setup.tokens(1, "valid"))[-1] == 2
    assert Trainer(cfg, tmp_path / "run").fit(progress=False)["status"] == "completed"
    assert main(["eval", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "tokenizers" / "1.json").read_bytes() == second.read_bytes()


@pytest.fixture(scope="module")
def trained(corpora, tmp_path_factory):
    """A tiny clone run on a corpus of its own, and its test perplexities."""
    one, _, _ = corpora
    run = tmp_path_factory.mktemp("portable") / "run"
    Trainer(tiny_config(one), run).fit(progress=False)
    report, _ = evaluate_run(run)
    return run, one, {k: v["ppl"] for k, v in report["languages"].items()}


def test_a_copied_run_works_with_an_empty_cache_and_only_its_test_text(trained, tmp_path, monkeypatch, capsys):
    run, corpus, ppl = trained
    info = json.loads((run / "run.json").read_text())
    saved = info["saved_languages"]
    assert [t["file"] for t in saved["tokenizers"]] == ["tokenizers/0.model"] and saved["model_vocab"] == 640
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, copy)
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "empty-cache"))
    # the training text is gone: only the test documents are left where the corpus was
    moved = tmp_path / "moved"
    shutil.move(str(corpus), moved)
    try:
        assert main(["sample", str(copy), "--language", "L2", "--tokens", "5"]) == 0  # needs no text at all
        assert main(["eval", str(copy)]) == 2
        err = capsys.readouterr().err
        assert "has its tokenizers, but the test text of its corpus" in err and "does not exist" in err
        lines = [line for f in sorted(moved.glob("*.txt")) for line in f.read_text().splitlines()]
        corpus.mkdir()
        (corpus / "test.txt").write_text("\n".join(d for d in lines if hash_split(d) == "test") + "\n")
        assert main(["eval", str(copy)]) == 0
        got = json.loads((copy / "eval.json").read_text())["languages"]
        assert {k: v["ppl"] for k, v in got.items()} == pytest.approx(ppl, rel=1e-9)
        assert not (tmp_path / "empty-cache" / "tokenizers").exists()  # no tokenizer was trained
        shutil.rmtree(corpus)
    finally:
        shutil.move(str(moved), corpus)
    # the analyses (held-out text: test and valid splits) on the copy, the cache still without tokenizers
    assert main(["align", str(copy), "--sequences", "4", "--grad-sequences", "2", "--no-figures"]) == 0
    task = tmp_path / "task.csv"
    task.write_text("text,label\nthe king saw,a\nthe sea,b\nthe road,a\nthe gate,b\n")
    assert main(["transfer", str(copy), "--task", str(task), "--steps", "1"]) == 0
    assert (copy / "alignment" / "alignment.json").is_file() and list((copy / "transfer").glob("*.json"))
    assert not (tmp_path / "empty-cache" / "tokenizers").exists()


def test_old_run_directories_without_copies_and_damaged_copies(trained, tmp_path, caplog):
    run, _, ppl = trained
    old = tmp_path / "old"
    shutil.copytree(run, old)
    shutil.rmtree(old / "tokenizers")
    info = json.loads((old / "run.json").read_text())
    del info["saved_languages"]
    (old / "run.json").write_text(json.dumps(info))
    report, _ = evaluate_run(old)  # tokenizers from the cache, as before copies existed
    assert {k: v["ppl"] for k, v in report["languages"].items()} == pytest.approx(ppl, rel=1e-9)
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "tokenizers" / "0.model").write_bytes(b"not the tokenizer")
    report, _ = evaluate_run(damaged)  # reported; the config's tokenizer is the recorded one
    assert "does not match its sha256" in caplog.text
    assert {k: v["ppl"] for k, v in report["languages"].items()} == pytest.approx(ppl, rel=1e-9)
    info = json.loads((damaged / "run.json").read_text())
    info["saved_languages"]["tokenizers"][0]["sha256"] = "0" * 64  # and now the config's is not the run's
    (damaged / "run.json").write_text(json.dumps(info))
    with pytest.raises(Exception, match="not the ones it was trained with"):
        load_session(damaged)


def _hf_perplexity(model, tokens: torch.Tensor, window: int, last_n: int) -> float:
    """xling's protocol (windows every last_n tokens, their last last_n targets scored) with transformers."""
    starts = range(0, len(tokens) - (window + 1) + 1, last_n)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in starts:
            chunk = tokens[start:start + window + 1].view(1, -1)
            logits = model(chunk[:, :-1]).logits[0, -last_n:].double()
            total -= float(logits.log_softmax(-1).gather(1, chunk[0, -last_n:].view(-1, 1)).sum())
            count += last_n
    return math.exp(total / count)


def test_hf_export_equals_xling_logits_perplexity_and_token_ids(trained, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    run, _, ppl = trained
    out = tmp_path / "hf-L2"
    assert main(["export", str(run), str(out), "--format", "hf", "--language", "L2"]) == 0
    assert "GPT2LMHeadModel" in capsys.readouterr().out
    from xling.fsio import UMASK

    # every file readable as the umask allows (safetensors alone would write the weights 0600)
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {f.name: 0o666 & ~UMASK for f in out.iterdir()}
    model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    session = load_session(run, device="cpu")
    setup, cfg = session.setup, session.cfg
    stream = setup.language_tokens(1, "test")
    ids = stream[:cfg.model.seq_len].view(1, -1)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, session.model(ids), atol=1e-4, rtol=0)
    hf_ppl = _hf_perplexity(model, stream, cfg.eval.window, cfg.eval.last_n)
    assert hf_ppl == pytest.approx(ppl["L2"], rel=1e-4)
    # the exported tokenizer gives L2's ids: each test document, then the end of document (EOS)
    sentence = "The king saw the house in the spring, 1234 times!"
    assert tokenizer(sentence, add_special_tokens=False).input_ids == encode_text(setup, 1, sentence).tolist()
    assert tokenizer.eos_token_id == setup.eod(1) == model.config.eos_token_id
    docs = make_documents(200)
    test_docs = [d for i in range(4) for d in docs[i::4] if hash_split(d) == "test"]  # in corpus order
    encoded = [i for d in test_docs for i in [*tokenizer(d, add_special_tokens=False).input_ids, tokenizer.eos_token_id]]
    assert encoded == stream.tolist()
    # the base language's export is the identity mapping
    assert main(["export", str(run), str(tmp_path / "hf-L1")]) == 0
    base = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf-L1")
    assert base(sentence, add_special_tokens=False).input_ids == encode_text(setup, 0, sentence).tolist()


def test_an_export_of_an_earlier_checkpoint_says_why(trained, tmp_path, capsys):
    """A finished run whose newest checkpoint is damaged exports the one before: the note says so, not that training
    did not finish."""
    pytest.importorskip("transformers")
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    newest = RunDir(run).checkpoint_dirs()[-1]
    weights = newest / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    err = capsys.readouterr().err
    assert f"skipping damaged checkpoint {newest.name}" in err
    assert "of 12: its newest checkpoint is missing or did not verify" in err and "training did not finish" not in err


def test_hf_export_removes_what_a_killed_export_left_beside_its_directory(trained, tmp_path):
    import os
    import subprocess
    import sys

    pytest.importorskip("tokenizers")
    run, _, _ = trained
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = temporary_beside(tmp_path / "probe", directory=True).name.split(".")[2].rsplit("-", 1)[0]
    left = tmp_path / f".hf.{host}-{dead.stdout.strip()}.abc123.tmp"  # as a kill -9 during an export leaves it
    other = tmp_path / f".hf.v2.{host}-{dead.stdout.strip()}.abc123.tmp"  # an export to hf.v2's: left alone
    for path in (left, other):
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"half")
        os.utime(path, (path.stat().st_atime - 7200, path.stat().st_mtime - 7200))  # two hours ago
    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert not left.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".hf.")) == [other.name]  # its own: renamed


def test_hf_export_of_a_brought_tokenizer_json_renumbers_it_per_language(corpora, tmp_path):
    transformers = pytest.importorskip("transformers")
    one, _, _ = corpora
    own = _hf_file(tmp_path / "tokenizer.json", make_documents(200))
    cfg = tiny_config(one, tokenizer={"path": str(own)}, train={"steps": 4, "checkpoint_every": 4})
    Trainer(cfg, tmp_path / "run").fit(progress=False)
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "out"), "--language", "L2"]) == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    setup = load_session(tmp_path / "run", device="cpu").setup
    sentence = "A shepherd crossed the sea with joy."
    assert tokenizer(sentence, add_special_tokens=False).input_ids == encode_text(setup, 1, sentence).tolist()
    assert tokenizer.eos_token_id == setup.eod(1) == 2 + setup.tokenizers[0].vocab_size  # cloned; the pad is not
    assert tokenizer.pad_token_id == 0


@pytest.mark.parametrize("byte_fallback", [True, False])
def test_hf_export_of_a_brought_unigram_model_gives_each_language_its_ids(corpora, tmp_path, byte_fallback):
    """A SentencePiece unigram model in a partly cloned run: each language's exported tokenizer segments as
    SentencePiece does and gives that language's ids (anchors shared, the rest shifted), also where the text holds
    a placeholder's name (the ids of the other languages) or characters that are no piece."""
    transformers = pytest.importorskip("transformers")
    one, _, _ = corpora
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(make_documents(200)), model_writer=model,
                                   model_type="unigram", vocab_size=300 if byte_fallback else 90,
                                   byte_fallback=byte_fallback, minloglevel=2)
    (tmp_path / "uni.model").write_bytes(model.getvalue())
    cfg = tiny_config(one, tokenizer={"path": str(tmp_path / "uni.model")}, languages={"frac_clone": 0.5},
                      train={"steps": 2, "checkpoint_every": 2})
    Trainer(cfg, tmp_path / "run").fit(progress=False)
    setup = load_session(tmp_path / "run", device="cpu").setup
    free = min(set(range(setup.model_vocab)) - set(setup.table[1].tolist()))  # an id L2's export fills with a placeholder
    texts = [*make_documents(40, seed=3), "Zürich ☃ 1234 times!!  two  spaces",  # ☃: not a piece (bytes, or unk)
             f"see <xling unused {free}> and <xling-unused-{free}> here", "ψυχή 水"]
    for lang, name in enumerate(["L1", "L2"]):
        assert main(["export", str(tmp_path / "run"), str(tmp_path / name), "--language", name]) == 0
        tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / name)
        for text in texts:
            assert tokenizer(text, add_special_tokens=False).input_ids == encode_text(setup, lang, text).tolist()
        assert tokenizer.eos_token_id == setup.eod(lang)
    size = setup.tokenizers[0].vocab_size
    assert 0 < sum(a == b for a, b in zip(*setup.table.tolist())) < size  # partly cloned: some ids shared, not all


def test_a_byte_level_tokenizer_with_a_word_order_transform_is_refused_before_training(corpora, tmp_path):
    """Word orders need SentencePiece's word-start marker; GPT-2's byte-level pieces have none, and the run says so
    when its languages are set up, before any training step or progress bar."""
    tk = pytest.importorskip("tokenizers")
    one, _, _ = corpora
    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel()
    tok.train_from_iterator(make_documents(200), tk.trainers.BpeTrainer(vocab_size=300, special_tokens=[
        "<pad>", "<unk>", "<|endoftext|>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = tiny_config(one, tokenizer={"path": str(tmp_path / "tokenizer.json")},
                      languages={"transforms": {"L2": ["clone", "inverted"]}})
    with pytest.raises(XlingError, match="marks word starts"):
        prepare_languages(cfg)
