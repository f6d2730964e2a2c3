"""The word2vec control: it sees exactly the run's training stream and gets the same embedding metrics."""

import sys

import numpy as np
import pytest

from conftest import tiny_config
from xling.analysis.word2vec import TrainingSentences, train_word2vec, word2vec_control
from xling.data.stream import prepare_languages
from xling.errors import XlingError


def test_sentences_are_the_training_windows_in_their_languages(tiny_corpus_dir):
    cfg = tiny_config(tiny_corpus_dir)
    setup = prepare_languages(cfg)
    sentences = TrainingSentences(cfg, setup, chunk_rows=5)  # chunking must not change the stream
    rows = list(sentences)
    assert len(rows) == len(sentences) == cfg.train.steps * cfg.train.batch_size
    x, y, _ = sentences.stream.rows(0, 3)
    for i in range(3):
        assert rows[i] == [str(int(t)) for t in x[i]] + [str(int(y[i, -1]))]
    vocab = setup.table.shape[1]
    for row, lang in zip(rows, sentences.stream.plan):
        ids = np.array(row, dtype=int)
        assert ((ids >= vocab) == bool(lang)).all()  # every token of a window is in the window's language


def test_word2vec_vectors_cover_the_stream():
    pytest.importorskip("gensim", reason="the word2vec control needs gensim")
    sentences = [["1", "2", "3", "4", "5"], ["6", "7", "8", "9", "1"]] * 20
    vin, vout, present = train_word2vec(sentences, vocab_size=12, vector_size=4, workers=1)
    assert vin.shape == vout.shape == (12, 4)
    assert present.tolist() == [False] + [True] * 9 + [False, False]
    assert (vin[~present] == 0).all() and (vin[present].abs().sum(1) > 0).all()


def test_word2vec_control_on_a_tiny_run(tiny_corpus_dir):
    pytest.importorskip("gensim", reason="the word2vec control needs gensim")
    from xling.analysis.alignment import training_counts

    cfg = tiny_config(tiny_corpus_dir)
    setup = prepare_languages(cfg)
    res = word2vec_control(cfg, setup, 0, 1, training_counts(setup), vector_size=8, workers=1)
    assert res["settings"]["vector_size"] == 8 and res["settings"]["epochs"] == 1
    assert res["pairs"] > 0
    for kind in ("input", "output"):
        assert -1 <= res[kind]["clone_pairs"] <= 1 and -1 <= res[kind]["all_pairs"] <= 1
    assert sum(b["n"] for b in res["by_frequency"]) == res["pairs"]


def test_missing_gensim_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gensim", None)
    monkeypatch.setitem(sys.modules, "gensim.models", None)
    with pytest.raises(XlingError, match="pip install"):
        train_word2vec([["1"]], vocab_size=2)
