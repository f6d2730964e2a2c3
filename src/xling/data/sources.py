"""Local corpora read as a stream of chunks: text, JSONL (plain, gzip, zstd), Parquet, Hugging Face datasets.

The reading process only moves bytes: it cuts each input into chunks of about CHUNK_BYTES (at line
boundaries, or whole files, or batches of rows) and never holds more than the chunk it is making.
Turning a chunk into document texts (decoding UTF-8, parsing JSON, reading Arrow) is `chunk_texts`,
which runs wherever the chunk is processed, in parallel worker processes for large corpora.
Documents come out in exactly the order of the inputs, however they are chunked.

zstandard, pyarrow and datasets are optional: they are imported only when such an input is used.
"""

from __future__ import annotations

import gzip
import importlib
import json
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import CorpusConfig
from ..errors import XlingError
from ..fsio import sha256_file

CHUNK_BYTES = 4 << 20  # input bytes per chunk: large enough to keep workers busy, small enough to hold a few
SUFFIXES = {"text": (".txt",), "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst"), "parquet": (".parquet",)}
LOCAL_NAMES = ("text", "jsonl", "parquet", "hf")


@dataclass(frozen=True)
class Chunk:
    """A piece of raw input. kind: "lines" (text, a document per line), "files" ([(path, bytes)], a
    document per file), "jsonl" (bytes of whole lines), "arrow" (a pyarrow string array) or "bible"
    ([(split, chapter)], made by corpora.py)."""

    kind: str
    data: object
    where: str = ""  # the file (or dataset) it comes from, for messages
    offset: int = 0  # lines, jsonl: where it starts in the (decompressed) file, in bytes
    line: int = 0  # jsonl: lines of the file before it
    size: int = 0  # input bytes it stands for (progress)
    field: str = ""  # jsonl: the field that holds the text


def optional_module(module: str, package: str, what: str):
    """Import an optional dependency, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise XlingError(f"{what} need the {package} package: pip install {package}") from None


# ----------------------------------------------------------------------------- files


def corpus_files(corpus: CorpusConfig) -> list[Path]:
    """The corpus's files: listed files as given, directories searched recursively (sorted)."""
    suffixes = SUFFIXES[corpus.name]
    if not corpus.paths:
        raise XlingError(f"corpus '{corpus.name}' has no paths: set corpus.paths to files or directories")
    files = []
    for entry in corpus.paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.name.endswith(suffixes) and p.is_file())
            if not found:
                others = f" (nor *{', *'.join(suffixes[1:])})" if len(suffixes) > 1 else ""
                raise XlingError(f"no *{suffixes[0]} files found under {path}{others}: add some or point "
                                 "corpus.paths elsewhere")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise XlingError(f"corpus path {path} does not exist: fix corpus.paths")
    return files


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered while the file is unchanged (fingerprints ask often)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _decompressed(path: Path, raw):
    if path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if path.name.endswith(".zst"):
        zstandard = optional_module("zstandard", "zstandard", "zstd-compressed files (.zst)")
        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


@contextmanager
def _reading(path, what: str):
    """Turn a damaged file's decompression / format errors into one line naming the file."""
    damaged: tuple = (gzip.BadGzipFile, EOFError, zlib.error)
    for module, error in (("zstandard", "ZstdError"), ("pyarrow", "ArrowException")):
        try:
            damaged += (getattr(importlib.import_module(module), error),)
        except ImportError:
            pass
    try:
        yield
    except damaged as exc:
        message = " ".join(str(exc).split())[:120] or exc.__class__.__name__
        raise XlingError(f"{path} is not a readable {what} ({message}): replace or remove the file") from None


def _line_blocks(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """(offset, bytes, input bytes read) blocks of whole lines of a (possibly compressed) file,
    about CHUNK_BYTES each; the input bytes of a compressed file are the compressed ones."""
    what = "gzip file" if path.name.endswith(".gz") else "zstd file" if path.name.endswith(".zst") else "file"
    with _reading(path, what), open(path, "rb") as raw, _decompressed(path, raw) as f:
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


def _text_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    if corpus.doc_per_line:
        for path in corpus_files(corpus):
            for offset, block, size in _line_blocks(path):
                yield Chunk("lines", block, str(path), offset, size=size)
        return
    batch, size = [], 0
    for path in corpus_files(corpus):
        data = path.read_bytes()
        batch.append((str(path), data))
        size += len(data)
        if size >= CHUNK_BYTES:
            yield Chunk("files", batch, size=size)
            batch, size = [], 0
    if batch:
        yield Chunk("files", batch, size=size)


def _jsonl_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    for path in corpus_files(corpus):
        lines = 0
        for offset, block, size in _line_blocks(path):
            yield Chunk("jsonl", block, str(path), offset, lines, size, corpus.text_field)
            lines += block.count(b"\n")


# ----------------------------------------------------------------------------- columns (Parquet, datasets)


def _string_column(schema, field: str, where: str):
    names = list(schema.names)
    if field not in names:
        raise XlingError(f"{where} has no column '{field}' (columns: {', '.join(names) or 'none'}): set "
                         "corpus.text_field to the column that holds the text")
    pa = importlib.import_module("pyarrow")
    kind = schema.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise XlingError(f"{where}: column '{field}' holds {kind}, not text: set corpus.text_field to the "
                         "column that holds the text")


def _arrow_chunks(batches, field: str, where: str, size_of) -> Iterator[Chunk]:
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
        with _reading(path, "Parquet file"):
            table = pq.ParquetFile(path)
            _string_column(table.schema_arrow, corpus.text_field, str(path))
            bytes_per_row = path.stat().st_size / max(table.metadata.num_rows, 1)
            batches = table.iter_batches(batch_size=8192, columns=[corpus.text_field])
            yield from _arrow_chunks(batches, corpus.text_field, str(path),
                                     lambda rows, _, per_row=bytes_per_row: round(rows * per_row))


@contextmanager
def _offline():
    """No network while a Hugging Face dataset loads: only what is on disk or in the local cache."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    modules = [m for m in (importlib.import_module("datasets.config"),
                           importlib.import_module("huggingface_hub.constants")) if hasattr(m, "HF_HUB_OFFLINE")]
    before = [m.HF_HUB_OFFLINE for m in modules]
    for m in modules:
        m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for m, value in zip(modules, before):
            m.HF_HUB_OFFLINE = value
        for k, value in saved.items():
            if value is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = value


_DATASETS: dict[str, list] = {}


def hf_datasets(spec: str) -> list:
    """The datasets.Dataset objects of one corpus.paths entry: a folder written by save_to_disk, or
    NAME[:CONFIG] of a dataset in the local Hugging Face cache (never downloaded). A DatasetDict gives
    all its splits, in order."""
    if spec in _DATASETS:
        return _DATASETS[spec]
    datasets = optional_module("datasets", "datasets", "Hugging Face datasets")
    path = Path(spec).expanduser()
    try:
        with _offline():
            if path.is_dir():
                loaded = datasets.load_from_disk(str(path))
            else:
                name, _, config = spec.partition(":")
                loaded = datasets.load_dataset(name, config or None)
    except Exception as exc:  # datasets raises many kinds (FileNotFoundError, ConnectionError, ValueError, ...)
        message = " ".join(str(exc).split())[:160] or exc.__class__.__name__
        hint = ("a folder written by save_to_disk" if path.is_dir() else
                "a save_to_disk folder, or NAME[:CONFIG] of a dataset already in the local Hugging Face cache")
        raise XlingError(f"cannot load the Hugging Face dataset '{spec}' ({message}): corpus.paths entries of "
                         f"corpus hf are {hint}") from None
    _DATASETS[spec] = list(loaded.values()) if isinstance(loaded, dict) else [loaded]
    return _DATASETS[spec]


def _dataset_files(ds) -> list[Path]:
    return [Path(f["filename"]) for f in ds.cache_files]


def hf_digests(spec: str) -> list[str]:
    """sha256 of every Arrow file of a Hugging Face dataset entry (its content, wherever it lives)."""
    out = []
    for ds in hf_datasets(spec):
        files = _dataset_files(ds)
        if not files:
            raise XlingError(f"the Hugging Face dataset '{spec}' lives only in memory: save it with "
                             "save_to_disk and put that folder in corpus.paths")
        out.append([file_digest(f) for f in files])
    return out


def _hf_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    pa = optional_module("pyarrow", "pyarrow", "Hugging Face datasets")
    if not corpus.paths:
        raise XlingError("corpus 'hf' has no paths: set corpus.paths to save_to_disk folders or dataset names")
    text_bytes = lambda rows, column: column.nbytes
    for spec in corpus.paths:
        for ds in hf_datasets(spec):
            _string_column(ds.data.schema, corpus.text_field, f"the Hugging Face dataset '{spec}'")
            files = _dataset_files(ds)
            if getattr(ds, "_indices", None) is not None or not files:  # a selection of rows: read via datasets
                yield from _arrow_chunks(ds.with_format("arrow").iter(batch_size=8192), corpus.text_field, spec,
                                         text_bytes)
                continue
            for f in files:  # the Arrow files themselves, read batch by batch (not memory-mapped)
                with _reading(f, "Arrow file"), pa.OSFile(str(f)) as source:
                    yield from _arrow_chunks(pa.ipc.open_stream(source), corpus.text_field, spec, text_bytes)


def read_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    """The raw input of a local corpus, in order, a chunk at a time."""
    readers = {"text": _text_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks, "hf": _hf_chunks}
    return readers[corpus.name](corpus)


def input_size(corpus: CorpusConfig) -> int:
    """Bytes of input of a local corpus (for progress and time estimates)."""
    if corpus.name == "hf":  # the text column's bytes (as hf chunks count them), from the Arrow metadata
        return sum(ds.data.column(corpus.text_field).nbytes for spec in corpus.paths for ds in hf_datasets(spec)
                   if corpus.text_field in ds.column_names)
    return sum(p.stat().st_size for p in corpus_files(corpus))


# ----------------------------------------------------------------------------- chunk -> texts (in workers)


def _decode(data: bytes, where: str, offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XlingError(f"{where} is not UTF-8 (bad byte at offset {offset + exc.start}): convert it to UTF-8") from None


def jsonl_objects(path, text: str, what: str, first_line: int = 1) -> list[tuple[int, dict]]:
    """(line number, object) of every non-empty line of a JSONL text; `what` names the fields
    expected, for the error message."""
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
        objects.append((number, record))
    return objects


def chunk_texts(chunk: Chunk) -> list[str]:
    """The raw document texts of a chunk, in order (not yet normalised; may be empty)."""
    if chunk.kind == "lines":
        return _decode(chunk.data, chunk.where, chunk.offset).splitlines()
    if chunk.kind == "files":
        return [_decode(data, path) for path, data in chunk.data]
    if chunk.kind == "jsonl":
        field, texts = chunk.field, []
        text = _decode(chunk.data, chunk.where, chunk.offset)
        for number, record in jsonl_objects(chunk.where, text, f"a '{field}' field", chunk.line + 1):
            if not isinstance(record.get(field), str):
                raise XlingError(f"{chunk.where}:{number} has no string field '{field}': "
                                 "set corpus.text_field to the field that holds the text")
            texts.append(record[field])
        return texts
    if chunk.kind == "arrow":
        return [t for t in chunk.data.to_pylist() if t]  # a missing value (null) is an empty document
    raise ValueError(f"unknown chunk kind {chunk.kind!r}")
