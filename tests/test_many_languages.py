"""Many real languages in one run (issue 14): N-language id tables, static shares (mix, temperature, UniMax),
the config keys, book partitions, and one small run of three Bible languages end to end."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import requires_bible, tiny_config_dict
from xling.config import from_dict, load_config, validate
from xling.data import bible
from xling.data import corpora as C
from xling.data import languages as L
from xling.data import mixture as MIX
from xling.errors import XlingError

PIECES = [  # three tiny "tokenizers": pad, unk, eod, then pieces some of which the others share
    ["<pad>", "<unk>", "<eod>", "▁the", "a", "▁and", "s"],
    ["<pad>", "<unk>", "<eod>", "▁le", "a", "▁et", "s", "▁la"],
    ["<pad>", "<unk>", "<eod>", "▁el", "a", "▁y", "▁la", "os"],
]
PADS = [0, 0, 0]


def _pieces_by_id(table: torch.Tensor, size: int) -> dict[int, set[str]]:
    """model id -> the piece strings (over all languages) that map to it."""
    out: dict[int, set[str]] = {}
    for lang, pieces in enumerate(PIECES):
        for i, piece in enumerate(pieces):
            out.setdefault(int(table[lang, i]), set()).add(piece)
    return out


def test_disjoint_tables_give_every_piece_of_every_language_its_own_id():
    table, size = L.merge_tables(PIECES, "disjoint", PADS)
    assert size == sum(map(len, PIECES)) and table.shape == (3, 8)
    ids = [int(table[lang, i]) for lang, pieces in enumerate(PIECES) for i in range(len(pieces)) if i != 0]
    assert len(ids) == len(set(ids)), "no two (language, piece) pairs share an id, pad aside"
    assert all(int(table[lang, 0]) == 0 for lang in range(3))  # every pad is the first language's
    assert table[2, 3] == len(PIECES[0]) + len(PIECES[1]) + 3  # shifted past the languages before it
    by_id = _pieces_by_id(table, size)
    assert by_id[0] == {"<pad>"} and all(len(v) == 1 for v in by_id.values())
    unused = set(range(size)) - set(by_id)  # the later languages' own pad slots: their pad is the first's
    assert unused == {len(PIECES[0]), len(PIECES[0]) + len(PIECES[1])}


def test_anchored_tables_map_each_distinct_string_to_exactly_one_id():
    table, size = L.merge_tables(PIECES, "anchored", PADS)
    strings = list(dict.fromkeys(p for pieces in PIECES for p in pieces))
    assert size == len(strings)
    by_id = _pieces_by_id(table, size)
    assert set(by_id) == set(range(size)) and all(len(v) == 1 for v in by_id.values()), "one id, one string"
    assert table[1, 4] == table[0, 4] == table[2, 4]  # "a" is the first language's
    assert table[2, 6] == table[1, 7]  # "▁la" anchors on the second language's new piece
    assert table[1, 3] == len(PIECES[0])  # new pieces numbered in language order, then id order


def test_two_language_tables_are_the_pairs():
    for mode in ("disjoint", "anchored"):
        pair, size = L.merge_table(PIECES[0], PIECES[1], mode)
        many, many_size = L.merge_tables(PIECES[:2], mode, PADS[:2])
        assert torch.equal(pair, many) and size == many_size


def test_joint_table_is_one_vocabulary_for_every_language():
    table = L.identity_table(7, 3)
    assert all(table[lang].tolist() == list(range(7)) for lang in range(3))


# --------------------------------------------------------------------------- shares


def test_share_sampling_is_exact_in_expectation(monkeypatch):
    """With evenly spaced uniform numbers, each language gets its share to within one row in n."""
    shares = [0.7, 0.05, 0.05, 0.1, 0.0, 0.1]
    n = 100_000
    monkeypatch.setattr(MIX, "uniform", lambda seed, stream, rows: np.asarray(rows, dtype=np.float64) / n)
    counts = np.bincount(MIX.choose_by_shares(0, np.arange(n), shares), minlength=len(shares))
    assert np.all(np.abs(counts / n - shares) <= 1 / n)
    assert counts[4] == 0  # a share of 0 is never drawn


def test_share_sampling_is_a_pure_function_of_seed_and_row():
    shares = [0.4, 0.3, 0.2, 0.1]
    rows = np.arange(50_000)
    whole = MIX.choose_by_shares(3, rows, shares)
    parts = np.concatenate([MIX.choose_by_shares(3, rows[a:a + 777], shares) for a in range(0, len(rows), 777)])
    assert np.array_equal(whole, parts)
    assert np.array_equal(whole[::-1], MIX.choose_by_shares(3, rows[::-1], shares))  # any order of rows
    assert not np.array_equal(whole, MIX.choose_by_shares(4, rows, shares))
    freq = np.bincount(whole, minlength=4) / len(rows)
    assert np.allclose(freq, shares, atol=4 * np.sqrt(0.25 / len(rows)))
    plan = MIX.share_plan(3, 100, 500, shares)
    assert np.array_equal(plan, whole)  # a plan is rows 0, 1, ... in order


def test_temperature_shares():
    sizes = [100, 400, 1600]
    assert np.allclose(MIX.temperature_shares(sizes, 1.0), [100 / 2100, 400 / 2100, 1600 / 2100])
    flat = MIX.temperature_shares(sizes, 2.0)  # proportional to the square roots 10, 20, 40
    assert np.allclose(flat, [10 / 70, 20 / 70, 40 / 70])
    assert np.allclose(MIX.temperature_shares(sizes, 1e6), [1 / 3] * 3, atol=1e-5)
    assert abs(sum(MIX.temperature_shares(sizes, 3.3)) - 1) < 1e-12


def test_unimax_caps_small_languages_and_hands_the_rest_to_large_ones():
    # Chung et al. 2023, Algorithm 1: budget 60; the smallest (size 1) gets 1 epoch, then 59 / 2 each is more
    # than 10 -> 10, and the largest takes the remaining 49
    assert np.allclose(MIX.unimax_shares([10, 1, 100], 60, epochs=1), [10 / 60, 1 / 60, 49 / 60])
    # 4 epochs: the smallest gets 4, then 56 / 2 = 28 each is below the next cap (40)
    assert np.allclose(MIX.unimax_shares([10, 1, 100], 60, epochs=4), [28 / 60, 4 / 60, 28 / 60])
    assert np.allclose(MIX.unimax_shares([500, 500, 500], 60, epochs=1), [1 / 3] * 3)  # uniform below the caps
    with pytest.raises(XlingError, match="fewer than the run's"):
        MIX.unimax_shares([10, 1, 10], 60, epochs=1)


# --------------------------------------------------------------------------- the config and the Mixture view


def many(**languages) -> dict:
    return {"corpus": {"name": "bible"}, "languages": {"kind": "real", "corpora": ["web", "fr", "rv1909"],
                                                       **languages}}


def test_the_mixture_view_of_many_languages():
    mix = MIX.Mixture.of(load_config(None, {"languages.kind": "real", "languages.corpora": ["web", "fr", "es"]}))
    assert mix.names == ("EN", "FR", "ES") and mix.rule == "uniform" and mix.expected_shares() == [1 / 3] * 3
    cfg = from_dict(many(mix={"en": 0.9, "LSG": 0.1}))  # a code, a translation name (any case)
    validate(cfg)
    mix = MIX.Mixture.of(cfg)
    assert mix.expected_shares() == [0.9, 0.1, 0.0] and mix.trained == ["EN", "FR"] and mix.many
    assert abs(mix.effective_p - 0.1) < 1e-12
    mono = MIX.Mixture.of(from_dict(many(mix={"es": 1})))
    assert mono.monolingual and mono.trained == ["ES"]
    temperature = MIX.Mixture.of(from_dict(many(temperature=3.3)))
    assert temperature.trained == ["EN", "FR", "ES"]  # every language has a share, whatever the sizes
    with pytest.raises(XlingError, match="depend on the corpora's sizes"):
        temperature.expected_shares()
    assert np.allclose(temperature.resolve([1, 4, 9], 10).shares, MIX.temperature_shares([1, 4, 9], 3.3))


def test_a_pair_and_clones_keep_their_mixture():
    pair = MIX.Mixture.of(load_config(None, {"languages.kind": "real", "languages.p": 0.2}))
    assert not pair.many and pair.expected_shares() == [0.8, 0.2] and pair.num_clones == 1
    assert pair.transforms == ((), ())


def test_two_languages_with_one_code_are_numbered():
    cfg = from_dict(many())
    cfg.languages.corpora = ["web", "kjv", "lsg"]
    assert C.language_names(cfg) == ["EN1", "EN2", "FR"]
    with pytest.raises(XlingError, match="'en' names more than one language"):
        C.language_index(cfg, "en", "languages.mix")
    assert C.language_index(cfg, "kjv", "languages.mix") == 1


def test_disjoint_books_deal_the_training_books_and_keep_the_tests_parallel():
    cfg = from_dict(many())
    cfg.corpus.books = "disjoint"
    corpora = C.language_corpora(cfg)
    assert [c.books for c in corpora] == ["1/3", "2/3", "3/3"]
    assert [c.translation for c in corpora] == ["web", "lsg", "rv1909"]
    train = [set(bible.split_books("train", c.books)) for c in corpora]
    assert set.union(*train) == set(bible.TRAIN_BOOKS) and sum(map(len, train)) == len(bible.TRAIN_BOOKS)
    assert all(bible.split_books("test", c.books) == bible.TEST_BOOKS for c in corpora)
    assert bible.split_books("train", "all") == bible.TRAIN_BOOKS  # the other values as before
    assert bible.split_books("valid", "odd") == tuple(b for b in bible.VALID_BOOKS if b % 2)


# --------------------------------------------------------------------------- one run, end to end


@pytest.mark.corpus
@requires_bible
def test_three_bible_languages_train_with_temperature_shares(tmp_path, tiny_corpus_dir):
    """Tokenizers per language on disjoint books, the disjoint table, the recorded shares and the sampled language
    counts, then evaluation in every language and alignment of any pair."""
    from xling.analysis.alignment import align_run
    from xling.data.stream import prepare_languages
    from xling.train.trainer import Trainer

    data = tiny_config_dict(tiny_corpus_dir, tokenizer={"vocab_size": 400},
                            train={"steps": 6, "checkpoint_every": 6})
    data["corpus"] = {"name": "bible", "translation": "web", "books": "disjoint"}  # a third of the books each
    data["languages"] = {"kind": "real", "vocab": "disjoint", "corpora": ["web", "lsg", "rv1909"],
                         "temperature": 1.0}
    cfg = from_dict(data)
    validate(cfg)
    setup = prepare_languages(cfg)
    assert setup.names == ["EN", "FR", "ES"] and setup.source_of_language == [0, 1, 2]
    assert setup.model_vocab == 3 * 400 and setup.table[2, 5] == 2 * 400 + 5
    info = Trainer(cfg, tmp_path / "run").fit(progress=False)
    sizes = [len(setup.tokens(s, "train")) for s in range(3)]
    shares = info["shares"]
    assert list(shares) == ["EN", "FR", "ES"] and abs(sum(shares.values()) - 1) < 1e-12
    assert np.allclose(list(shares.values()), np.array(sizes) / sum(sizes), atol=1e-3)  # T = 1: by size
    rows = 6 * cfg.train.batch_size
    plan = MIX.share_plan(cfg.train.seed, 6, cfg.train.batch_size, list(shares.values()))
    counted = Counter(dict(zip(setup.names, np.bincount(plan, minlength=3) * cfg.model.seq_len)))
    assert info["tokens"] == dict(counted) and sum(info["tokens"].values()) == rows * cfg.model.seq_len
    report = json.loads((tmp_path / "run" / "run.json").read_text())
    assert report["shares"] == shares
    result = align_run(tmp_path / "run", pair=("FR", "ES"), sequences=4, grad_sequences=1, figures=False)
    assert result["languages"] == ["FR", "ES"] and result["hidden"]["method"] == "matching"


def test_many_languages_of_your_own_text_a_folder_each(tmp_path, monkeypatch):
    """languages.corpora with corpus.name text: one folder per language, named by languages.names, mixed by shares;
    relative folders are found from elsewhere through the run's workdir."""
    from conftest import make_documents
    from xling.train.evaluate import evaluate_run
    from xling.train.trainer import Trainer

    texts = {"aa": make_documents(120, seed=1), "bb": [d.upper() for d in make_documents(120, seed=2)],
             "cc": [" ".join(w[::-1] for w in d.split()) for d in make_documents(120, seed=3)]}
    for name, docs in texts.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "text.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    data = tiny_config_dict("unused", train={"steps": 6, "checkpoint_every": 3})
    data["corpus"] = {"name": "text", "doc_per_line": True}
    data["languages"] = {"kind": "real", "corpora": ["aa", "bb", "cc"], "names": ["AA", "BB", "CC"],
                         "mix": {"aa": 0.5, "BB": 0.3, "cc": 0.2}}
    cfg = from_dict(data)
    validate(cfg)
    assert [c.paths for c in C.language_corpora(cfg)] == [["aa"], ["bb"], ["cc"]]
    assert MIX.Mixture.of(cfg).expected_shares() == [0.5, 0.3, 0.2]
    info = Trainer(cfg, tmp_path / "run").fit(progress=False)
    assert info["shares"] == {"AA": 0.5, "BB": 0.3, "CC": 0.2} and sum(info["tokens"].values()) == 6 * 8 * 32
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    report, _ = evaluate_run(tmp_path / "run", split="valid", max_tokens=0)
    assert set(report["languages"]) == {"AA", "BB", "CC"} and all(r["ppl"] > 1 for r in report["languages"].values())
    # the newest checkpoint damaged: the earlier one's tokens come from the plan with the recorded shares
    (tmp_path / "run" / "checkpoints" / "step_0000006" / "model.safetensors").write_bytes(b"damaged")
    import xling.data.stream as stream
    from xling.train.rundir import RunDir

    monkeypatch.setattr(stream, "run_mixture", lambda *a: pytest.fail("the corpora's sizes were read again"))
    report, _ = evaluate_run(tmp_path / "run", split="valid", max_tokens=0)
    logged = {r["step"]: r["tokens"] for r in RunDir(tmp_path / "run").read_metrics() if "tokens" in r}
    assert report["step"] == 3 and report["tokens_trained"] == logged[3]


def test_many_languages_of_your_own_parallel_text_hold_out_the_same_documents(tmp_path, monkeypatch):
    """languages.corpora with corpus.valid and .test (one file per language, in order): every language holds out
    exactly its given files, so a parallel test set is held out in all languages at once (a hash split of each
    language's own text would put a document's translations in different splits), and alignment pairs the test
    files' documents by position; a wrong count or a file given as one language's text and another's held-out file
    is refused."""
    from conftest import make_documents
    from xling.analysis.alignment import align_run
    from xling.train.evaluate import evaluate_run
    from xling.train.trainer import Trainer

    english = make_documents(100, seed=4) + make_documents(40, seed=5, sentences=1)  # held out: one sentence each
    languages = {"aa": english, "bb": [d.upper() for d in english]}  # a parallel corpus: document i translates i
    for name, docs in languages.items():
        (tmp_path / name).mkdir()
        for split, part in (("train", docs[:100]), ("valid", docs[100:120]), ("test", docs[120:])):
            (tmp_path / name / f"{split}.txt").write_text("\n".join(part) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    data = tiny_config_dict("unused", train={"steps": 4, "checkpoint_every": 4})
    data["corpus"] = {"name": "text", "doc_per_line": True, "valid": ["aa/valid.txt", "bb/valid.txt"],
                      "test": ["aa/test.txt", "bb/test.txt"]}
    data["languages"] = {"kind": "real", "corpora": ["aa/train.txt", "bb/train.txt"], "names": ["AA", "BB"]}
    cfg = from_dict(data)
    validate(cfg)
    for corpus, docs in zip(C.language_corpora(cfg), languages.values()):
        assert [C.load_documents(corpus, split) for split in ("train", "valid", "test")] == [docs[:100], docs[100:120],
                                                                                             docs[120:]]
    Trainer(cfg, tmp_path / "run").fit(progress=False)
    report, _ = evaluate_run(tmp_path / "run", split="test", max_tokens=0)
    assert set(report["languages"]) == {"AA", "BB"} and all(r["ppl"] > 1 for r in report["languages"].values())
    result = align_run(tmp_path / "run", sequences=50, grad_sequences=1, figures=False)
    assert result["hidden"]["method"] == "matching" and "test files, " in result["probes"]
    (tmp_path / "bb" / "test.txt").write_text("\n".join(english[121:]).upper() + "\n", encoding="utf-8")
    with pytest.raises(XlingError, match=r"test files \(aa/test\.txt; bb/test\.txt\) hold 20 and 19 documents \(empty ones dropped\)"):
        align_run(tmp_path / "run", figures=False)

    short = from_dict({**data, "corpus": {**data["corpus"], "test": ["aa/test.txt"]}})
    with pytest.raises(XlingError, match=r"one held-out file or folder per language \(2\)"):
        validate(short)
    crossed = from_dict({**data, "corpus": {**data["corpus"], "test": ["bb/train.txt", "aa/test.txt"]}})
    validate(crossed)
    with pytest.raises(XlingError, match=r"names .*bb/train\.txt twice: list each language's text once"):
        C.language_corpora(crossed)


def test_held_out_files_listed_in_another_languages_order_are_named(tmp_path, monkeypatch, caplog):
    """Held-out files are matched to languages by their order only: a swapped list would score each language on
    another's text. Character frequencies tell the two apart (lower against upper case here); two texts alike in
    their characters are never called swapped."""
    from conftest import make_documents
    from xling.data.heldout import out_of_order
    from xling.data.prepare import prepare
    from xling.data.stream import prepare_languages

    english = make_documents(100, seed=4)
    languages = {"aa": english, "bb": [d.upper() for d in english], "cc": make_documents(100, seed=6)}
    for name, (old, new) in {"dd": ("e", "3"), "ee": ("a", "@"), "ff": ("d", "D"), "gg": ("l", "L")}.items():
        languages[name] = [d.replace(old, new) for d in english]  # seven languages, each its own characters
    for name, docs in languages.items():
        (tmp_path / name).mkdir()
        for split, part in (("train", docs[:80]), ("valid", docs[80:90]), ("test", docs[90:])):
            (tmp_path / name / f"{split}.txt").write_text("\n".join(part) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    def config(langs, valid, test):
        data = tiny_config_dict("unused")
        data["corpus"] = {"name": "text", "doc_per_line": True, "valid": [f"{v * 2}/valid.txt" for v in valid],
                          "test": [f"{t * 2}/test.txt" for t in test]}
        data["languages"] = {"kind": "real", "corpora": [f"{n * 2}/train.txt" for n in langs], "names": list(langs.upper())}
        cfg = from_dict(data)
        validate(cfg)
        return C.language_corpora(cfg), list(langs.upper())

    assert out_of_order(*config("ab", "ab", "ab")) is None
    assert out_of_order(*config("ab", "ab", "ba")) == (
        "the held-out test text given for B (aa/test.txt) reads like A's training text, not B's; the one given for "
        "A (bb/test.txt) like B's (character frequencies): give one held-out file per language in the order of the "
        "languages (A, B)")
    assert "held-out valid text given for B (aa/valid.txt)" in out_of_order(*config("ab", "ba", "ab"))
    assert out_of_order(*config("ac", "ac", "ca")) is None  # two English texts: no order is clearly better
    # among seven languages, five in place must not hide the two swapped (judged cycle by cycle)
    assert out_of_order(*config("abdefgc", "abdefgc", "abdegfc")) == (
        "the held-out test text given for G (ff/test.txt) reads like F's training text, not G's; the one given for "
        "F (gg/test.txt) like G's (character frequencies): give one held-out file per language in the order of the "
        "languages (A, B, D, E, F, G, C)")
    assert out_of_order(*config("abd", "abd", "bda")) == (  # a cycle of three: each language named
        "the held-out test text given for D (aa/test.txt) reads like A's training text, not D's; the one given for "
        "B (dd/test.txt) like D's; the one given for A (bb/test.txt) like B's (character frequencies): give one "
        "held-out file per language in the order of the languages (A, B, D)")
    assert out_of_order(*config("abdefgc", "abdefgc", "abdefgc")) is None
    data = tiny_config_dict("unused")
    data["corpus"] = {"name": "text", "doc_per_line": True, "valid": ["aa/valid.txt", "bb/valid.txt"],
                      "test": ["bb/test.txt", "aa/test.txt"]}
    data["languages"] = {"kind": "real", "corpora": ["aa/train.txt", "bb/train.txt"], "names": ["A", "B"]}
    for prepares in (prepare_languages, prepare):  # a run's data, and `xling prepare`
        caplog.clear()
        with caplog.at_level("WARNING"):
            prepares(from_dict(data), tmp_path / "cache")
        assert "the held-out test text given for B (aa/test.txt) reads like A's training text" in caplog.text
