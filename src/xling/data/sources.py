"""Local corpora read as a stream of chunks: text, JSONL (plain, gzip, zstd), Parquet (Hugging Face datasets:
hf_datasets.py).

The reading process only cuts the input into chunks of about CHUNK_BYTES: byte ranges of plain
files (the worker that gets one reads it, from the first line that starts in it), groups of whole
files, blocks of lines of a compressed file, batches of rows. It never holds more than the chunk
it is making. Turning a chunk into document texts (reading, decoding UTF-8, parsing JSON, Arrow)
runs wherever the chunk is processed, in parallel worker processes for large corpora. Documents
come out in exactly the order of the inputs, however they are chunked.

zstandard and pyarrow are optional: they are imported only when such an input is used.
"""

from __future__ import annotations

import gzip
import importlib
import json
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import CorpusConfig
from ..errors import XlingError
from ..fsio import sha256_file
from .parallel import Workers

CHUNK_BYTES = 4 << 20  # input bytes per chunk: large enough to keep workers busy, small enough to hold a few
SUFFIXES = {"text": (".txt",), "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst"), "parquet": (".parquet",)}
LOCAL_NAMES = ("text", "jsonl", "parquet", "hf")


@dataclass(frozen=True)
class Chunk:
    """A piece of raw input. kind: "lines" (text, a document per line), "paths" (text files, a
    document each; loaded: [(path, bytes)]), "jsonl" (whole lines), "arrow" (a pyarrow string
    array) or "bible" ([(split, chapter)], made by corpora.py from bible.py's chapters). A chunk of lines of a plain file
    carries no data but a byte range of the file, read where the chunk is processed (`load`): it
    owns the lines that start in [offset, offset + length)."""

    kind: str
    data: object
    where: str = ""  # the file (or dataset) it comes from, for messages
    offset: int = 0  # lines, jsonl: where it starts in the (decompressed) file, in bytes
    line: int = 0  # jsonl: lines of the file before it (-1: not counted yet)
    size: int = 0  # input bytes it stands for (progress)
    field: str = ""  # jsonl: the field that holds the text
    length: int = 0  # a byte range: its length
    split: str = ""  # every document's split where the corpus gives its held-out files; "": by each one's hash


def optional_module(module: str, package: str, what: str):
    """Import an optional dependency, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise XlingError(f"{what} need the {package} package: pip install {package}") from None


# ----------------------------------------------------------------------------- files

SECTION = "(in corpus, or in languages.second for a pair's second language)"  # messages cannot tell which


def corpus_files(corpus: CorpusConfig) -> list[Path]:
    """The corpus's files: listed files as given, directories searched recursively (sorted); each file once."""
    suffixes, fix = SUFFIXES[corpus.name], "corpus.paths, .valid, .test, languages.second or .corpora"
    if not corpus.paths:
        raise XlingError(f"corpus '{corpus.name}' has no paths: set paths {SECTION} to files or directories")
    files = []
    for entry in corpus.paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.name.endswith(suffixes) and p.is_file())
            if not found:
                others = f" (nor *{', *'.join(suffixes[1:])})" if len(suffixes) > 1 else ""
                raise XlingError(f"no *{suffixes[0]} files found under {path}{others}: add some or fix {fix}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise XlingError(f"corpus path {path} does not exist: fix {fix}")
    return first_of_each(files, Path.resolve)  # a file given twice (a folder and a file in it, two spellings): once


def first_of_each(items: list, key) -> list:
    """`items` in order, each `key(item)` only where it first comes: an input named twice is read once."""
    first: dict = {}
    for item in items:
        first.setdefault(key(item), item)
    return list(first.values())


_DIGESTS: dict[tuple, str] = {}


def _digest_key(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered while the file is unchanged (fingerprints ask often)."""
    key = _digest_key(path)
    return _DIGESTS[key] if key in _DIGESTS else _DIGESTS.setdefault(key, sha256_file(path))


def _digest_task(_, path: str) -> tuple[tuple, str]:
    return _digest_key(Path(path)), sha256_file(Path(path))


def digest_files(corpora: list[CorpusConfig], workers: Workers) -> None:
    """Hash the files of local corpora in the worker processes, ahead of their fingerprints."""
    paths = [p for c in corpora if c.name in SUFFIXES for p in corpus_files(c)]
    todo = list(dict.fromkeys(str(p) for p in paths if _digest_key(p) not in _DIGESTS))
    for _, (key, digest) in workers.map(_digest_task, todo, min_items=2):
        _DIGESTS[key] = digest


class _ZstdFrames:
    """A zstd stream of one or more frames, read like a file. A stream that ends inside a frame raises ZstdError:
    zstandard's own stream reader returns what it could decode and stops, so a truncated file would read as a
    shorter (or empty) corpus instead of a damaged one."""

    def __init__(self, raw, zstandard):
        self.raw, self.zstandard = raw, zstandard
        self.frame = zstandard.ZstdDecompressor().decompressobj()
        self.inside = False  # within a frame that has not ended yet

    def read(self, size: int) -> bytes:
        while True:
            data = self.raw.read(size)
            if not data:
                if self.inside:
                    raise self.zstandard.ZstdError("the file ends inside a frame: it is truncated")
                return b""
            out = []
            while data:
                if self.frame.eof:  # the next frame of the stream
                    self.frame = self.zstandard.ZstdDecompressor().decompressobj()
                out.append(self.frame.decompress(data))
                data = self.frame.unused_data if self.frame.eof else b""
            self.inside = not self.frame.eof
            if any(out):
                return b"".join(out)


def _decompressed(path: Path, raw):
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if path.name.endswith(".zst"):
        return nullcontext(_ZstdFrames(raw, optional_module("zstandard", "zstandard", "zstd-compressed files (.zst)")))
    return raw


@contextmanager
def reading(path, what: str):
    """Turn a damaged file's decompression / format errors into one line naming the file."""
    try:
        yield
    except Exception as exc:
        damaged: tuple = (gzip.BadGzipFile, EOFError, zlib.error)
        for module, error in (("zstandard", "ZstdError"), ("pyarrow", "ArrowException")):
            if module in sys.modules:  # looked up when it failed: the reader may have imported it just now
                damaged += (getattr(sys.modules[module], error),)
        if not isinstance(exc, damaged):
            raise
        message = " ".join(str(exc).split())[:120] or exc.__class__.__name__
        raise XlingError(f"{path} is not a readable {what} ({message}): replace or remove the file") from None


def _line_blocks(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(offset, bytes, input bytes read) blocks of whole lines of a compressed file, about
    CHUNK_BYTES each; the input bytes are the compressed ones."""
    what = "gzip file" if path.name.endswith(".gz") else "zstd file"
    with reading(path, what), open(path, "rb") as raw, _decompressed(path, raw) as f:
        offset, tail, done = 0, b"", 0
        while True:
            block = f.read(CHUNK_BYTES)
            if not block:
                break
            block = tail + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # no line end yet: keep reading
                tail = block
                continue
            position = raw.tell()
            yield offset, block[:cut], position - done
            offset, tail, done = offset + cut, block[cut:], position
        if tail:
            yield offset, tail, raw.tell() - done


def _ranges(path: Path, kind: str, field: str = "") -> Iterator[Chunk]:
    """Chunks of a plain file as byte ranges (the workers read them)."""
    size = path.stat().st_size
    for start in range(0, size, CHUNK_BYTES):
        length = min(CHUNK_BYTES, size - start)
        yield Chunk(kind, None, str(path), start, -1, length, field, length)


def _line_start(f, position: int) -> int:
    """The first position at or after `position` where a line starts (0, or just after a newline)."""
    if position == 0:
        return 0
    f.seek(position - 1)
    while True:
        block = f.read(1 << 16)
        found = block.find(b"\n")
        if found >= 0 or not block:
            return position + found if found >= 0 else position - 1
        position += len(block)


def load(chunk: Chunk) -> Chunk:
    """The chunk with its data: a byte range of a plain file is read now, from the first line that
    starts in it to the first that starts after it."""
    if chunk.kind == "paths":
        return replace(chunk, data=[(path, Path(path).read_bytes()) for path in chunk.data])
    if chunk.data is not None:
        return chunk
    with open(chunk.where, "rb") as f:
        begin, end = _line_start(f, chunk.offset), _line_start(f, chunk.offset + chunk.length)
        f.seek(begin)
        data = f.read(max(0, end - begin))
    return replace(chunk, data=data, offset=begin)


def _lines_before(path: str, offset: int) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(min(1 << 20, offset - f.tell())), b""))


def _text_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    if corpus.doc_per_line:
        for path in corpus_files(corpus):
            yield from _ranges(path, "lines")
        return
    batch, size = [], 0
    for path in corpus_files(corpus):
        batch.append(str(path))
        size += path.stat().st_size
        if size >= CHUNK_BYTES:
            yield Chunk("paths", tuple(batch), size=size)
            batch, size = [], 0
    if batch:
        yield Chunk("paths", tuple(batch), size=size)


def _jsonl_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    for path in corpus_files(corpus):
        if not path.name.endswith((".gz", ".zst")):
            yield from _ranges(path, "jsonl", corpus.text_field)
            continue
        lines = 0
        for offset, block, size in _line_blocks(path):
            yield Chunk("jsonl", block, str(path), offset, lines, size, corpus.text_field)
            lines += block.count(b"\n")


# ----------------------------------------------------------------------------- columns (Parquet, datasets)


def string_column(schema, field: str, where: str):
    names = list(schema.names)
    if field not in names:
        raise XlingError(f"{where} has no column '{field}' (columns: {', '.join(names) or 'none'}): set "
                         f"text_field {SECTION} to the column that holds the text")
    pa = importlib.import_module("pyarrow")
    kind = schema.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise XlingError(f"{where}: column '{field}' holds {kind}, not text: set text_field {SECTION} to the "
                         "column that holds the text")


def arrow_chunks(batches, field: str, where: str, size_of) -> Iterator[Chunk]:
    """Regroup record batches of one column into chunks of about CHUNK_BYTES of text;
    size_of(rows, column) says how many input bytes a chunk stands for."""
    pa = importlib.import_module("pyarrow")
    pending, nbytes = [], 0
    for batch in batches:
        pending.append(batch.column(batch.schema.get_field_index(field)))
        nbytes += pending[-1].nbytes
        if nbytes >= CHUNK_BYTES:
            column = pa.concat_arrays(pending)
            yield Chunk("arrow", column, where, size=size_of(len(column), column))
            pending, nbytes = [], 0
    if pending:
        column = pa.concat_arrays(pending)
        yield Chunk("arrow", column, where, size=size_of(len(column), column))


def _parquet_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    pq = optional_module("pyarrow.parquet", "pyarrow", "Parquet files")
    for path in corpus_files(corpus):
        with reading(path, "Parquet file"):
            table = pq.ParquetFile(path)
            string_column(table.schema_arrow, corpus.text_field, str(path))
            bytes_per_row = path.stat().st_size / max(table.metadata.num_rows, 1)
            batches = table.iter_batches(batch_size=8192, columns=[corpus.text_field])
            yield from arrow_chunks(batches, corpus.text_field, str(path),
                                     lambda rows, _, per_row=bytes_per_row: round(rows * per_row))


def read_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    """The raw input of a corpus of files (text, jsonl, parquet), in order, a chunk at a time."""
    readers = {"text": _text_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks}
    return readers[corpus.name](corpus)


def input_size(corpus: CorpusConfig) -> int:
    """Bytes of input of a corpus of files (for progress and time estimates)."""
    return sum(p.stat().st_size for p in corpus_files(corpus))


# ----------------------------------------------------------------------------- chunk -> texts (in workers)


def _decode(data: bytes, where: str, offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if offset == 0 and data.startswith(b"PAR1"):  # (Parquet's magic number)
            raise XlingError(f"{where} is a Parquet file, not text: set name: parquet {SECTION}") from None
        raise XlingError(f"{where} is not UTF-8 (bad byte at offset {offset + exc.start}): convert it to UTF-8") from None


def csv_row(raw: dict, where: str) -> dict:
    """A `csv.DictReader` row that has one value per column of the header, or one XlingError naming `where`.
    (DictReader puts extra fields under the key None, and None for missing ones; empty extra fields, a trailing
    comma, are harmless.)"""
    extra = [v for v in raw.get(None) or [] if v.strip()]
    if extra or None in raw.values():
        fields = len(raw) - 1 + len(raw[None]) if None in raw else sum(v is not None for v in raw.values())
        raise XlingError(f"{where}: {fields} fields where the header has {len(raw) - (None in raw)}; give every row "
                         "one value per column (quote values with commas)")
    return {k: v for k, v in raw.items() if k is not None}


def jsonl_objects(path, text: str, what: str, first_line: int = 1,
                  check: Callable[[int, dict], object] | None = None) -> list[tuple[int, dict]]:
    """(line number, object) of every non-empty line of a JSONL text; `what` names the fields
    expected, for the error message; `check(line, object)` is called on each in turn (so the first bad
    line is the one named, whatever is wrong with it)."""
    objects = []
    for number, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise XlingError(f"{path}:{number}: invalid JSON ({exc.msg}): fix or remove that line") from None
        if not isinstance(record, dict):
            raise XlingError(f"{path}:{number}: each line must be a JSON object with {what}")
        if check:
            check(number, record)
        objects.append((number, record))
    return objects


# What str.split() takes for whitespace, besides the space and the newline (a test checks the list).
OTHER_SPACES = ("\t\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _needs_collapsing(data: bytes) -> bool:
    """Whether some line of UTF-8 `data` has whitespace to collapse: a space at either end, two
    in a row, or any whitespace but the space and the newline (any control byte counts)."""
    b = np.frombuffer(data + b"\0\0", dtype=np.uint8)
    space, newline = b == 32, b == 10
    if space[0] or space[len(data) - 1] or (space[1:] & (space[:-1] | newline[:-1])).any() \
            or (newline[1:] & space[:-1]).any() or ((b[:len(data)] < 32) & ~newline[:len(data)]).any():
        return True
    if data.isascii():
        return False
    # U+0085, U+00A0 (C2 ..), U+1680 (E1 9A 80), U+2000-200A, U+2028, U+2029, U+202F (E2 80 ..),
    # U+205F (E2 81 9F), U+3000 (E3 80 80)
    lead = np.flatnonzero((b == 0xC2) | ((b >= 0xE1) & (b <= 0xE3)))
    b0, b1, b2 = b[lead], b[np.minimum(lead + 1, len(b) - 1)], b[np.minimum(lead + 2, len(b) - 1)]
    wide = (b0 == 0xC2) & ((b1 == 0x85) | (b1 == 0xA0))
    wide |= (b0 == 0xE1) & (b1 == 0x9A) & (b2 == 0x80)
    wide |= (b0 == 0xE2) & (b1 == 0x80) & ((b2 <= 0x8A) | (b2 == 0xA8) | (b2 == 0xA9) | (b2 == 0xAF))
    wide |= (b0 == 0xE2) & (b1 == 0x81) & (b2 == 0x9F)
    wide |= (b0 == 0xE3) & (b1 == 0x80) & (b2 == 0x80)
    return bool(wide.any())


def clean_lines(chunk: Chunk) -> list[str] | None:
    """The non-empty lines of a loaded "lines" chunk if each is a document as it stands (nothing to
    collapse), else None: the same documents as collapsing each line's whitespace, faster."""
    if not chunk.data or _needs_collapsing(chunk.data):
        return None
    return [line for line in _decode(chunk.data, chunk.where, chunk.offset).split("\n") if line]


def chunk_texts(chunk: Chunk) -> list[str]:
    """The raw document texts of a loaded chunk, in order (not yet normalised; may be empty)."""
    if chunk.kind == "lines":
        return _decode(chunk.data, chunk.where, chunk.offset).splitlines()
    if chunk.kind == "paths":
        return [_decode(data, path) for path, data in chunk.data]
    if chunk.kind == "jsonl":
        field, text = chunk.field, _decode(chunk.data, chunk.where, chunk.offset)
        if chunk.offset == 0:
            text = text.removeprefix("\ufeff")  # a byte-order mark (some editors write one) is not JSON

        def check(number: int, record: dict) -> None:
            if not isinstance(record.get(field), str) and record.get(field, "") is not None:  # null: no document
                raise XlingError(f"{chunk.where}:{number}: field '{field}' is {json.dumps(record[field])[:40]}, "
                                 "not text: fix or remove that line" if field in record else
                                 f"{chunk.where}:{number} has no field '{field}' (fields: {', '.join(record) or 'none'}): "
                                 f"set text_field {SECTION} to the one with the text")

        try:
            texts = [record[field] for _, record in jsonl_objects(chunk.where, text, f"a '{field}' field",
                                                                  max(chunk.line, 0) + 1, check)]
        except XlingError:
            if chunk.line >= 0:
                raise  # else a byte range: count the file's lines before it, then say where again
            return chunk_texts(replace(chunk, line=_lines_before(chunk.where, chunk.offset)))
        return [t for t in texts if t is not None]  # a null is a missing value, as in a Parquet or Arrow column
    if chunk.kind == "arrow":
        return [t for t in chunk.data.to_pylist() if t]  # a missing value (null) is no document
    raise ValueError(f"unknown chunk kind {chunk.kind!r}")
