"""Token arrays: stream layout, dtype, manifest, cache reuse and invalidation (tiny corpora)."""

import json
import types

import numpy as np
import pytest

from conftest import syllable_sentences
from xling.data import token_arrays as ta
from xling.data.corpora import load_documents
from xling.data.token_arrays import encode_documents, read_manifest, token_array, token_counts, token_dtype
from xling.data.tokenizer import train_tokenizer
from xling.errors import warnings_to_stderr

pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture
def corpus(syllable_corpus):
    return syllable_corpus


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(syllable_sentences(400), 320, tmp_path_factory.mktemp("tok") / "sp.model")


def test_documents_each_end_with_eod(corpus, tok):
    tokens = token_array(corpus, "train", tok)
    docs = load_documents(corpus, "train")
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert tokens[-1] == tok.eod_id and np.count_nonzero(tokens == tok.eod_id) == len(docs)
    ends = np.flatnonzero(tokens == tok.eod_id)
    segments = np.split(np.asarray(tokens), ends + 1)[:-1]
    assert [tok.decode(seg[:-1]) for seg in segments] == docs


def test_array_is_read_only(corpus, tok):
    tokens = token_array(corpus, "valid", tok)
    with pytest.raises(ValueError):
        tokens[0] = 5


def test_dtype_choice():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    big = types.SimpleNamespace(vocab_size=100_000, eod_id=2, encode=lambda docs: [[70_000, 3] for _ in docs])
    tokens = encode_documents(["a", "b"], big)
    assert tokens.dtype == np.uint32 and tokens.tolist() == [70_000, 3, 2, 70_000, 3, 2]


def test_manifest_describes_the_array(tmp_path, corpus, tok):
    manifest = read_manifest(corpus, "test", tok)
    tokens = token_array(corpus, "test", tok)
    assert manifest["source"]["paths"] == corpus.paths and manifest["split"] == "test"
    assert manifest["tokenizer_sha256"] == tok.sha256 and manifest["vocab_size"] == 320
    assert manifest["n_tokens"] == len(tokens) and manifest["n_documents"] == len(load_documents(corpus, "test"))
    assert manifest["dtype"] == "<u2" and len(manifest["sha256"]) == 64
    assert {"fingerprint", "created", "xling_version"} <= set(manifest)
    bin_path, json_path = ta.token_array_paths(corpus, "test", tok)
    assert bin_path.parent.parent == tmp_path / "cache" / "tokens" and json.loads(json_path.read_text()) == manifest


def test_second_call_reuses_the_cache(corpus, tok, monkeypatch):
    first = token_array(corpus, "train", tok)
    bin_path, _ = ta.token_array_paths(corpus, "train", tok)
    mtime = bin_path.stat().st_mtime_ns
    monkeypatch.setattr(ta, "build_token_arrays", lambda *a: pytest.fail("rebuilt a cached array"))
    again = token_array(corpus, "train", tok, verify=True)
    assert np.array_equal(first, again) and bin_path.stat().st_mtime_ns == mtime


def test_changed_corpus_gets_a_new_entry(tmp_path, corpus, tok):
    before = np.array(token_array(corpus, "train", tok))
    old_path, _ = ta.token_array_paths(corpus, "train", tok)
    (tmp_path / "text.txt").write_text("\n".join(syllable_sentences(400, seed=3)), encoding="utf-8")
    after = token_array(corpus, "train", tok)
    assert ta.token_array_paths(corpus, "train", tok)[0] != old_path
    assert not np.array_equal(before, after)


def test_damaged_entries_are_reported_and_rebuilt(corpus, tok, capsys):
    warnings_to_stderr()  # as the CLI does (else the result would depend on which tests ran first)
    good = np.array(token_array(corpus, "train", tok))
    bin_path, json_path = ta.token_array_paths(corpus, "train", tok)
    bin_path.write_bytes(bin_path.read_bytes()[:-2])  # truncated: caught by the size check
    assert np.array_equal(token_array(corpus, "train", tok), good)
    assert "does not match its manifest" in capsys.readouterr().err
    json_path.unlink()  # no manifest: an unfinished entry, rebuilt silently
    assert np.array_equal(token_array(corpus, "train", tok), good)
    assert capsys.readouterr().err == ""
    bin_path.write_bytes(b"\0" * bin_path.stat().st_size)  # same size, altered: caught by the checksum
    assert not np.array_equal(token_array(corpus, "train", tok, verify=False), good)
    assert np.array_equal(token_array(corpus, "train", tok), good)
    assert "does not match its manifest" in capsys.readouterr().err


def test_no_temp_files_left(tmp_path, corpus, tok):
    for split in ("train", "valid", "test"):
        token_array(corpus, split, tok)
    names = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert sorted(n.split(".")[-1] for n in names) == ["bin"] * 3 + ["json"] * 3


def test_token_counts(corpus, tok):
    tokens = token_array(corpus, "train", tok)
    counts = token_counts(tokens, tok.vocab_size)
    assert counts.shape == (320,) and counts.sum() == len(tokens) and counts[tok.eod_id] > 0


def test_building_an_entry_removes_what_a_killed_build_of_it_left(corpus, tok):
    """`xling train` builds arrays too (not only `xling prepare`): a kill -9's half-written file goes then."""
    import os
    import subprocess
    import sys

    from xling.fsio import temporary_beside

    bin_path, _ = ta.token_array_paths(corpus, "train", tok)
    fd, mine = temporary_beside(bin_path)  # (names the temp file as a build would, with this machine's name)
    os.close(fd)
    os.unlink(mine)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = mine.rsplit("/", 1)[1].split(".")[3].rsplit("-", 1)[0]  # (.train.bin.HOST-PID.RANDOM.tmp)
    left = bin_path.parent / f".train.bin.{host}-{dead.stdout.strip()}.abc123.tmp"
    left.write_bytes(b"half")
    os.utime(left, (left.stat().st_atime - 7200, left.stat().st_mtime - 7200))  # two hours ago, its process gone
    token_array(corpus, "train", tok)
    assert not left.exists() and bin_path.is_file()
