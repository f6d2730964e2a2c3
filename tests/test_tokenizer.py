"""Tokenizer: special ids, byte fallback, determinism, errors and the cache (tiny corpora)."""


import pytest

from conftest import syllable_sentences
from xling.config import CorpusConfig
from xling.data import tokenizer as tk
from xling.data.tokenizer import Tokenizer, get_tokenizer, train_tokenizer, training_sentences
from xling.errors import XlingError

VOCAB = 320


pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture
def corpus(syllable_corpus):
    return syllable_corpus


@pytest.fixture
def trained(tmp_path):
    return train_tokenizer(syllable_sentences(400), VOCAB, tmp_path / "m" / "sp.model")


def test_special_ids(trained):
    assert (trained.pad_id, trained.unk_id, trained.eod_id) == (0, 1, 2)
    assert trained.pieces()[:4] == ["<pad>", "<unk>", "<eod>", "<0x00>"]
    assert trained.vocab_size == VOCAB == len(trained.pieces())


def test_eod_is_never_produced_by_text(trained):
    ids = trained.encode(["Kalo <eod> mine, 12.", "<pad> <unk>"])
    assert all(i not in (0, 1, 2) for seq in ids for i in seq)


def test_round_trip_and_byte_fallback(trained):
    text = "Kalo mine rutashi, 1234 venal."
    assert trained.decode(trained.encode([text])[0]) == text
    unseen = "Ærø ☃ 東京"
    ids = trained.encode([unseen])[0]
    assert trained.decode(ids) == unseen
    assert any(trained.pieces()[i].startswith("<0x") for i in ids)
    assert trained.unk_id not in ids


def test_digits_split(trained):
    pieces = trained.pieces()
    assert all(len(pieces[i].strip("▁")) <= 1 for i in trained.encode(["1234567"])[0])


def test_training_is_deterministic_and_atomic(tmp_path, trained):
    again = train_tokenizer(syllable_sentences(400), VOCAB, tmp_path / "n" / "sp.model")
    assert again.sha256 == trained.sha256
    assert (tmp_path / "n" / "sp.model").read_bytes() == (tmp_path / "m" / "sp.model").read_bytes()
    assert Tokenizer.load(tmp_path / "m" / "sp.model").sha256 == trained.sha256
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["sp.model"]  # no temp files left


def test_vocab_too_large_is_a_one_line_hint(tmp_path):
    with pytest.raises(XlingError, match=r"tokenizer.vocab_size 5000 is too large for this corpus \(at most \d+\): "
                                         r"lower tokenizer.vocab_size"):
        train_tokenizer(syllable_sentences(50), 5000, tmp_path / "sp.model")
    assert not (tmp_path / "sp.model").exists()


def test_a_corpus_too_small_for_any_allowed_vocabulary_asks_for_more_text(tmp_path):
    with pytest.raises(XlingError, match=r"too small for a tokenizer: it has at most \d+ pieces, and "
                                         r"tokenizer.vocab_size is at least 300: give more text"):
        train_tokenizer(["ab cd"] * 30, 300, tmp_path / "sp.model")  # (lowering vocab_size could not help)


def test_vocab_too_small_for_the_characters(tmp_path):
    with pytest.raises(XlingError, match=r"vocab_size 262 is too small .*\(at least \d+\): raise tokenizer.vocab_size"):
        train_tokenizer(syllable_sentences(50), 262, tmp_path / "sp.model")


def test_long_documents_are_cut_into_sentences():
    doc = "word " * 5000 + "End. Next one! And"
    pieces = list(training_sentences([doc]))
    assert all(len(p) <= tk.MAX_SENTENCE_CHARS for p in pieces)
    assert pieces[-2:] == ["Next one!", "And"]


def test_get_tokenizer_caches_by_corpus_and_vocab(tmp_path, corpus, monkeypatch):
    calls = []
    real = tk.train_on_sentences
    monkeypatch.setattr(tk, "train_on_sentences", lambda *a, **kw: calls.append(a[1]) or real(*a, **kw))
    first = get_tokenizer([corpus], VOCAB)
    assert first.path.is_relative_to(tmp_path / "cache" / "tokenizers") and first.path.name == "sp.model"
    second = get_tokenizer([corpus], VOCAB)
    assert calls == [VOCAB] and second.sha256 == first.sha256 and second.path == first.path
    assert get_tokenizer([corpus], VOCAB + 8).path != first.path
    (tmp_path / "text.txt").write_text("\n".join(syllable_sentences(400, seed=1)), encoding="utf-8")
    changed = get_tokenizer([corpus], VOCAB)
    assert calls == [VOCAB, VOCAB + 8, VOCAB] and changed.path != first.path


@pytest.mark.parametrize("damage", ["swapped", "truncated", "no manifest"])
def test_a_cached_tokenizer_that_is_not_the_trained_one_is_reported_and_retrained(tmp_path, corpus, caplog, damage):
    first = get_tokenizer([corpus], VOCAB)
    other = train_tokenizer(syllable_sentences(400, seed=5), VOCAB, tmp_path / "other" / "sp.model")
    if damage == "swapped":  # a valid model, but not the one trained on this corpus
        first.path.write_bytes(other.path.read_bytes())
    elif damage == "truncated":
        first.path.write_bytes(first.path.read_bytes()[:100])
    else:  # killed between writing the model and its manifest
        first.path.with_suffix(".json").unlink()
    again = get_tokenizer([corpus], VOCAB)
    assert again.sha256 == first.sha256 and again.pieces() == first.pieces()  # deterministic retraining
    assert Tokenizer.load(first.path).sha256 == first.sha256  # the cache holds the right model again
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert bool(warned) == (damage != "no manifest") and all("does not match its manifest" in w for w in warned)


def test_joint_tokenizer_over_two_corpora(tmp_path, corpus):
    other = tmp_path / "other.txt"
    other.write_text("\n".join(syllable_sentences(400, seed=2)), encoding="utf-8")
    second = CorpusConfig(name="text", paths=[str(other)], doc_per_line=True)
    joint = get_tokenizer([corpus, second], VOCAB, cache_dir=tmp_path / "elsewhere")
    assert joint.path.is_relative_to(tmp_path / "elsewhere")
    assert joint.path != get_tokenizer([corpus], VOCAB, cache_dir=tmp_path / "elsewhere").path


def test_default_cache_dir(monkeypatch, tmp_path):
    assert tk.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("XLING_CACHE")
    assert tk.default_cache_dir().parts[-2:] == (".cache", "xling")


def test_a_tokenizer_learns_from_and_is_keyed_by_the_train_files_only(tmp_path):
    """A corpus with its own held-out files: editing its test file does not train the tokenizer again."""
    lines = syllable_sentences(1500, seed=3)
    for name, part in (("train", lines[:1400]), ("valid", lines[1400:1450]), ("test", lines[1450:])):
        (tmp_path / f"{name}.txt").write_text("\n".join(part) + "\n")
    corpus = CorpusConfig(name="text", paths=[str(tmp_path / "train.txt")], doc_per_line=True,
                          valid=[str(tmp_path / "valid.txt")], test=[str(tmp_path / "test.txt")])
    first = get_tokenizer([corpus], VOCAB, cache_dir=tmp_path / "cache")
    (tmp_path / "test.txt").write_text("a different test text entirely\n")
    assert get_tokenizer([corpus], VOCAB, cache_dir=tmp_path / "cache").path == first.path
    (tmp_path / "train.txt").write_text("\n".join(lines[:1300]) + "\n")
    assert get_tokenizer([corpus], VOCAB, cache_dir=tmp_path / "cache").path != first.path
