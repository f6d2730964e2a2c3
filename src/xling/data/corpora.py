"""Where text comes from: the built-in parallel Bibles (bible.py), or local text, JSONL, Parquet or datasets
(sources.py).

Local corpora are split by a stable hash of each document's text, so adding documents never
moves the existing ones to another split. Every corpus can be read as a stream of chunks
(`iter_chunks`, then `chunk_documents` per chunk, possibly in another process), so preparing one
never holds it in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..config import CorpusConfig, RunConfig, num_languages
from ..errors import XlingError
from ..fsio import json_key
from . import sources
from .bible import (
    LANGUAGE_DEFAULTS,
    PROBE_BOOKS,
    TEST_BOOKS,
    TRANSLATIONS,
    VALID_BOOKS,
    bible_chapters,
    bible_db_path,
    get_translation,
    split_books,
    translation_chapters,
)
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
    for book, _, text in translation_chapters(get_translation(corpus.translation).name):
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
        return sum(len(text) for b, _, text in translation_chapters(get_translation(corpus.translation).name) if b in books)
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
