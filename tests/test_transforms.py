"""Word-order transforms (data/transforms.py): on constructed sentences whose words and sentence ends are known,
and as properties over random windows (every token kept, inversion an involution, permutation undone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xling.data import transforms as T
from xling.errors import XlingError

# A tiny SentencePiece-like vocabulary: "▁" starts a word; "." ends a sentence; "," sticks to the word before it.
PIECES = ["<eod>", "<pad>", "▁the", "▁cat", "▁sat", "▁on", "▁mat", "s", "ting", ",", ".", "▁.", "?", "▁I", "'"]
ID = {p: i for i, p in enumerate(PIECES)}
CLASSES = T.piece_classes(PIECES, [ID["<eod>"], ID["<pad>"]])


def ids(text: str) -> np.ndarray:
    return np.array([ID[p] for p in text.split()], dtype=np.int64)


def text(row) -> str:
    return " ".join(PIECES[i] for i in row)


def test_piece_classes_know_words_and_sentence_ends():
    assert CLASSES.starts_word[ID["▁cat"]] and not CLASSES.starts_word[ID["s"]]
    assert CLASSES.fixed[ID["."]] and CLASSES.fixed[ID["▁."]] and CLASSES.fixed[ID["?"]]
    assert CLASSES.fixed[ID["<eod>"]] and CLASSES.fixed[ID["<pad>"]]
    assert not CLASSES.fixed[ID[","]] and not CLASSES.starts_word[ID["▁."]]  # a sentence end never starts a word


def test_sentence_ends_written_against_letters_are_counted_as_hidden():
    """A brought tokenizer's "▁mat." ends a sentence that no boundary marks: its share of the text's sentence ends
    (the special pieces are no sentence ends)."""
    pieces = PIECES + ["▁mat.", "▁sat?", "▁3.", "▁e.g", "▁U.S", "▁e.g."]
    classes = T.piece_classes(pieces, [ID["<eod>"], ID["<pad>"]])
    assert classes.hides_end[len(PIECES)] and classes.hides_end[len(PIECES) + 1] and not classes.hides_end[ID["."]]
    assert not classes.hides_end[len(PIECES) + 2:].any()  # a number's dot, an abbreviation's: no sentence end
    assert classes.ends[ID["."]] and classes.ends[ID["▁."]] and not classes.ends[ID["<eod>"]]
    assert not classes.fixed[len(PIECES)] and classes.starts_word[len(PIECES)]  # it moves, as a word
    row = lambda text: np.array([pieces.index(p) for p in text.split()])
    assert T.hidden_end_share(row("▁the ▁cat ▁sat ▁on ▁the ▁mat. <eod> ▁I ▁sat? <eod> ▁I ▁sat ."), classes) == 2 / 3
    assert T.hidden_end_share(row("▁the ▁cat ▁sat . <eod> ▁I ▁sat ?"), classes) == 0.0
    assert T.hidden_end_share(row("▁the ▁cat <eod>"), classes) == 0.0


def test_a_reordered_language_whose_tokenizer_hides_its_sentence_ends_is_warned_of_once(
        tmp_path, tiny_corpus_dir, monkeypatch, caplog):
    from conftest import tiny_config
    from xling.data import stream
    from xling.data.stream import prepare_languages

    cfg = tiny_config(tiny_corpus_dir, languages={"transforms": {"L2": ["clone", "inverted"]}})
    setup = prepare_languages(cfg, tmp_path / "cache")
    monkeypatch.setattr(stream, "_HIDDEN_ENDS_WARNED", set())
    with caplog.at_level("WARNING"):
        setup.ordered_tokens(1, "train")  # xling's own tokenizer splits punctuation from letters: nothing to say
    assert "sentence ends against letters" not in caplog.text
    monkeypatch.setattr(T, "hidden_end_share", lambda ids, classes: 0.4)
    with caplog.at_level("WARNING"):
        setup.ordered_tokens(1, "valid"), setup.ordered_tokens(1, "test")
    assert caplog.text.count("L2's tokenizer writes 40% of its sentence ends against letters") == 1


def test_inverted_reverses_words_and_keeps_pieces_of_a_word_together():
    row = ids("▁the ▁cat s ▁sat ting , ▁on ▁the ▁mat . ▁I ▁sat ?")
    got = T.word_order(row, CLASSES, "inverted")
    assert text(got) == "▁mat ▁the ▁on ▁sat ting , ▁cat s ▁the . ▁sat ▁I ?"


def test_sentence_ends_and_documents_never_move_and_bound_the_sentences():
    row = ids("▁the ▁cat . <eod> ▁I ▁sat ▁on ▁. ▁mat")
    got = T.word_order(row, CLASSES, "inverted")
    assert text(got) == "▁cat ▁the . <eod> ▁on ▁sat ▁I ▁. ▁mat"


def test_a_window_cut_inside_a_word_keeps_the_cut_tail_in_place():
    row = ids("s ting ▁the ▁cat ▁sat .")  # the window starts inside a word: its tail is the segment's head
    assert text(T.word_order(row, CLASSES, "inverted")) == "s ting ▁sat ▁cat ▁the ."


def test_permuted_uses_one_order_per_sentence_length_and_never_the_identity():
    first = ids("▁the ▁cat ▁sat ▁on . ▁I ▁sat ▁on ▁mat .")
    got = T.word_order(first, CLASSES, "permuted")
    order = T._permutation(4)
    assert (order != np.arange(4)).any()
    words_a, words_b = ["▁the", "▁cat", "▁sat", "▁on"], ["▁I", "▁sat", "▁on", "▁mat"]
    want = [words_a[j] for j in order] + ["."] + [words_b[j] for j in order] + ["."]
    assert text(got) == " ".join(want)  # both four-word sentences moved the same way
    # fixed for every run and every version: the permuted language is defined by these orders
    assert {n: T._permutation(n).tolist() for n in (2, 3, 4, 7)} == {
        2: [1, 0], 3: [1, 0, 2], 4: [3, 1, 2, 0], 7: [2, 5, 1, 0, 4, 3, 6]}


def test_batches_are_rows_of_their_own():
    rows = np.stack([ids("▁the ▁cat ▁sat"), ids("▁on ▁the ▁mat")])
    got = T.word_order(rows, CLASSES, "inverted")
    assert [text(r) for r in got] == ["▁sat ▁cat ▁the", "▁mat ▁the ▁on"]
    assert got.shape == rows.shape and got.dtype == rows.dtype


def test_clone_is_left_to_the_id_table_and_unknown_orders_are_refused():
    row = ids("▁the ▁cat .")
    assert np.array_equal(T.apply_word_order(row, CLASSES, ("clone",)), row)
    assert text(T.apply_word_order(row, CLASSES, ("clone", "inverted"))) == "▁cat ▁the ."
    with pytest.raises(ValueError):
        T.word_order(row, CLASSES, "reversed")


def test_a_tokenizer_without_word_starts_is_refused():
    with pytest.raises(XlingError, match="marks word starts"):
        T.piece_classes(["a", "b", "Ġc"], [])


windows = st.lists(st.integers(0, len(PIECES) - 1), min_size=0, max_size=60).map(lambda v: np.array(v, np.int64))


@settings(max_examples=300, deadline=None)
@given(windows)
def test_every_token_is_kept_and_inversion_twice_is_the_identity(row):
    once = T.word_order(row, CLASSES, "inverted")
    assert sorted(once.tolist()) == sorted(row.tolist())
    assert np.array_equal(T.word_order(once, CLASSES, "inverted"), row)
    fixed = CLASSES.fixed[row]
    assert np.array_equal(once[fixed], row[fixed])  # sentence ends and specials stay where they were


@settings(max_examples=300, deadline=None)
@given(windows)
def test_permutation_keeps_every_token_and_is_undone_by_its_inverse(row):
    moved = T.word_order(row, CLASSES, "permuted")
    assert sorted(moved.tolist()) == sorted(row.tolist())
    assert np.array_equal(T.word_order(moved, CLASSES, "permuted", inverse=True), row)


def test_elasticity_recovers_a_known_slope_within_each_language():
    """report/beyond.elasticity: ln TEff on ln share within each language, per seed; here TEff = c_lang * share^-0.6
    with each language at its own level, so the slope is -0.6 whatever the levels."""
    from types import SimpleNamespace

    from xling.report.beyond import elasticity

    names = ("en", "fr", "ru")
    rows = []
    for seed, noise in ((0, 1.0), (1, 1.02), (2, 0.98)):
        for shares in ((0.7, 0.15, 0.15), (0.15, 0.7, 0.15), (1 / 3, 1 / 3, 1 / 3), (0.05, 0.05, 0.9)):
            mix = SimpleNamespace(names=names, expected_shares=lambda s=shares: list(s))
            spec = SimpleNamespace(config={"train": {"seed": seed}})
            for lang, level in zip(names, (1.0, 3.0, 0.5)):
                share = shares[names.index(lang)]
                rows.append(SimpleNamespace(language=lang, mix=mix, spec=spec, teff=noise * level * share ** -0.6))
    slope = elasticity(rows)
    assert slope.n == 3 and slope.mean == pytest.approx(-0.6, abs=1e-9)


def test_ordered_stream_in_chunks_equals_the_whole_stream():
    rng = np.random.default_rng(0)
    stream = rng.integers(0, len(PIECES), 5000).astype(np.uint16)
    whole = T.apply_word_order(stream.astype(np.int64), CLASSES, ("inverted",))
    for chunk in (50, 333, 1 << 22):  # every chunk of 50 random pieces holds a fixed one (a third of them are)
        got = T.ordered_stream(stream, CLASSES, ("clone", "inverted"), chunk=chunk)
        assert got.dtype == stream.dtype and np.array_equal(got, whole)


def test_training_windows_of_a_reordered_clone_are_windows_of_the_text_evaluation_scores(tmp_path, tiny_corpus_dir):
    """L2 inverted: every training row is a window of the whole inverted split (whole sentences reordered, as
    evaluation sees them), not a window reordered on its own; L1 rows stay windows of the plain text. The
    reordered stream is cached on disk beside the token array and read back by a new setup."""
    from conftest import tiny_config
    from xling.data.stream import TrainStream, prepare_languages

    cfg = tiny_config(tiny_corpus_dir, languages={"transforms": {"L2": ["clone", "inverted"]}})
    seq_len, rows = cfg.model.seq_len, 64
    setup = prepare_languages(cfg, tmp_path / "cache")
    stream = TrainStream.of_run(cfg, setup, steps=rows // cfg.train.batch_size)
    x, y, langs = stream.rows(0, rows)
    plain = np.asarray(setup.tokens(0, "train")).astype(np.int64)
    classes = setup.piece_classes(0)
    inverted = T.apply_word_order(plain, classes, ("inverted",))
    windows = stream.windows_of(0, rows)
    assert set(langs.tolist()) == {0, 1}
    differs_from_window_by_window = 0
    for row, (lang, w) in enumerate(zip(langs.tolist(), windows.tolist())):
        window = slice(w * seq_len, (w + 1) * seq_len + 1)
        text = (inverted if lang == 1 else plain)[window]
        assert torch.equal(torch.cat([x[row], y[row, -1:]]), setup.table[lang][torch.from_numpy(text)])
        if lang == 1:  # what the first version did: reorder each window on its own
            differs_from_window_by_window += not np.array_equal(text, setup.reorder(1, plain[window]))
    assert differs_from_window_by_window > 0
    assert torch.equal(setup.language_tokens(1, "test"),
                       setup.table[1][torch.from_numpy(T.apply_word_order(
                           np.asarray(setup.tokens(0, "test")).astype(np.int64), classes, ("inverted",)))])
    cached = list((tmp_path / "cache").rglob(f"*.inverted.v{T.ORDER_VERSION}"))
    assert cached and all(f.stat().st_size == setup.tokens(0, "train").nbytes or "train" not in f.name for f in cached)
    again = prepare_languages(cfg, tmp_path / "cache")
    assert np.array_equal(again.ordered_tokens(1, "train"), inverted)


def _many_rows(teff_of_share, settings, seeds=(0, 1, 2), names=("en", "fr", "ru")):
    """Rows of a study of many languages as report/beyond.py reads them: per setting (name -> (rule, shares)),
    seed and language a TEff from teff_of_share(language, share, seed)."""
    from types import SimpleNamespace

    rows = []
    for setting, (rule, shares) in settings.items():
        mix = SimpleNamespace(names=names, many=True, rule=rule, expected_shares=lambda s=shares: list(s))
        for seed in seeds:
            spec = SimpleNamespace(setting=setting, config={"train": {"seed": seed}})
            for lang, share in zip(names, shares):
                rows.append(SimpleNamespace(language=lang, mix=mix, spec=spec, mono=False, label=lang,
                                            teff=teff_of_share(lang, share, seed)))
    return SimpleNamespace(rows=rows)


def test_share_question_judges_only_shares_far_from_uniform():
    """M1: TEff falling with share is supported at a small and a large share; a temperature-like setting
    (shares within a few per cent of uniform) adds no judged check."""
    from xling.report.beyond import share_question
    from xling.report.verdict import Status

    third = 1 / 3
    settings = {"uniform": ("uniform", (third, third, third)), "temperature": ("temperature", (0.34, 0.33, 0.33)),
                "dominant-en": ("mix", (0.8, 0.1, 0.1)), "dominant-fr": ("mix", (0.1, 0.8, 0.1)),
                "dominant-ru": ("mix", (0.1, 0.1, 0.8))}
    noise = {0: 1.0, 1: 1.03, 2: 0.97}
    a = _many_rows(lambda lang, share, seed: noise[seed] * share ** -0.5, settings)
    tests, lines = share_question(a, [])
    assert len(tests) == 1 + 3 * 2  # the elasticity, and per language one low and one high share
    assert all(t.status is Status.SUPPORTED for t in tests)
    assert lines[0].startswith("Elasticity") and "-0.50" in lines[0]
    flat = _many_rows(lambda lang, share, seed: noise[seed] * 2.0, settings)
    assert all(t.status is not Status.SUPPORTED for t in share_question(flat, [])[0])


def test_a_study_writes_the_reordered_streams_before_any_run_starts(tmp_path, tiny_corpus_dir, fresh_cache):
    """preflight: the reordered streams a study needs are cached once, before workers could race to write them."""
    from test_study import tiny_study_dict
    from xling.study.runner import preflight
    from xling.study.spec import build_study

    data = tiny_study_dict(tiny_corpus_dir, seeds=(0,), ps=(0.5,), fractions=(0.5,))
    data["groups"]["mix"]["set"]["languages.transforms"] = {"L2": ["clone", "permuted"]}
    preflight(build_study(data, tmp_path / "study.yaml"))
    cached = sorted(f.name.split(".")[-3] for f in (tmp_path / "cache").rglob(f"*.permuted.v{T.ORDER_VERSION}"))
    assert len(cached) == 3  # train, valid, test


def test_a_run_that_reorders_words_is_identified_with_the_version_of_the_transforms(monkeypatch):
    """Runs trained before the word-order transforms changed keep their old ids, so a study does not
    take them for runs of the current transforms; runs without a reordering are unaffected."""
    from xling.config import RunConfig, to_dict
    from xling.study import spec

    plain = to_dict(RunConfig())
    reordered = {**plain, "languages": {**plain["languages"], "transforms": {"EN2": ["clone", "inverted"]}}}
    cloned_only = {**plain, "languages": {**plain["languages"], "transforms": {"EN2": ["clone"]}}}
    before = {name: spec.config_hash(c) for name, c in
              (("plain", plain), ("reordered", reordered), ("cloned_only", cloned_only))}
    monkeypatch.setattr(spec, "ORDER_VERSION", T.ORDER_VERSION + 1)
    assert spec.config_hash(reordered) != before["reordered"]
    assert spec.config_hash(plain) == before["plain"] and spec.config_hash(cloned_only) == before["cloned_only"]
