"""Token streams of a corpus split, encoded once and cached as memory-mapped arrays.

Layout: `<cache>/tokens/<key>/<split>.bin` (raw little-endian uint16/uint32) and
`<split>.json` (a manifest saying where the tokens came from). The key hashes the corpus
fingerprint, the tokenizer's sha256, the split and FORMAT_VERSION, so a changed corpus or
tokenizer lands in a new directory instead of silently reusing stale tokens. The manifest is
written last and atomically: an entry without a manifest is incomplete and gets rebuilt.

Building reads the corpus once for all its missing splits, as a stream of chunks encoded in
parallel worker processes and appended in corpus order to the split files, so the arrays are the
same for any number of workers and memory does not grow with the corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import CorpusConfig
from ..fsio import (
    atomic_write,
    atomic_write_json,
    default_cache_dir,
    json_key,
    read_json,
    remove_stale_temporaries,
    sha256_file,
)
from .brought import tokenizer_from_bytes
from .corpora import (
    SPLITS,
    check_split_counts,
    chunk_documents,
    corpus_fingerprint,
    corpus_size,
    corpus_splits,
    iter_chunks,
    require_split,
)
from .parallel import Progress, Workers, workers_of
from .tokenizer import Tokenizer
from .words import WordEncoder, encode_documents, token_dtype

log = logging.getLogger(__name__)

# Bumped whenever the on-disk layout or the stream construction changes.
FORMAT_VERSION = 1


def array_key(corpus: CorpusConfig, split: str, tokenizer: Tokenizer) -> str:
    identity = {"corpus": corpus_fingerprint(corpus, split), "tokenizer": tokenizer.sha256, "split": split,
                "format": FORMAT_VERSION,
                # a tokenizer.json's own truncation and padding are not applied since 2026-11-29: arrays encoded
                # with them (documents cut at the file's length) are not reused
                **({"encoding": 2} if tokenizer.kind == "hf" else {})}
    return json_key(identity)


def _is_valid(bin_path: Path, manifest: dict | None, verify: bool) -> bool:
    """A cache entry is usable if its manifest exists and matches the file (size; sha256 if asked)."""
    if manifest is None or not bin_path.is_file():
        return False
    try:
        expected = manifest["n_tokens"] * np.dtype(manifest["dtype"]).itemsize
    except (KeyError, TypeError):
        return False
    if bin_path.stat().st_size != expected:
        return False
    return not verify or sha256_file(bin_path) == manifest["sha256"]


@dataclasses.dataclass(frozen=True)
class _EncodeJob:
    """What encoding a chunk needs, small enough to go with every chunk: the tokenizer's file and
    sha256 (its bytes only when it has no file), the splits, the tokenizer's threads, and whether
    documents may be encoded a word at a time (SentencePiece models xling trained)."""

    sha256: str
    path: str | None
    model: bytes | None
    splits: tuple[str, ...]
    threads: int
    words: bool = True

    @classmethod
    def of(cls, tokenizer: Tokenizer, splits: tuple[str, ...], threads: int) -> _EncodeJob:
        path = str(tokenizer.path) if tokenizer.path is not None else None
        return cls(tokenizer.sha256, path, None if path else tokenizer.model_bytes, tuple(splits), threads,
                   tokenizer.words)


class _DocumentEncoder:
    """Whole documents through the tokenizer (a tokenizer xling did not train: no word cache)."""

    def __init__(self, tokenizer, threads: int):
        self.tokenizer, self.threads = tokenizer, threads

    def encode(self, docs: list[str]) -> np.ndarray:
        return encode_documents(docs, self.tokenizer, self.threads)


_ENCODERS: dict[tuple[str, int], WordEncoder | _DocumentEncoder] = {}  # per process: words stay cached across chunks


def _encoder(job: _EncodeJob) -> WordEncoder | _DocumentEncoder:
    key = (job.sha256, job.threads)
    if key not in _ENCODERS:
        _ENCODERS.clear()
        tokenizer = tokenizer_from_bytes(job.model if job.model is not None else Path(job.path).read_bytes(),
                                         words=job.words)
        if tokenizer.sha256 != job.sha256:
            raise RuntimeError(f"{job.path} changed while the token arrays were built")
        if job.words:
            _ENCODERS[key] = WordEncoder(tokenizer, token_dtype(tokenizer.vocab_size), job.threads)
        else:
            _ENCODERS[key] = _DocumentEncoder(tokenizer, job.threads)
    return _ENCODERS[key]


def _encode_chunk(job: _EncodeJob, chunk) -> tuple[Counter, dict[str, tuple[bytes, int]]]:
    """Worker: documents per split of a chunk, and the token stream (bytes) and document count of
    each wanted split."""
    docs = chunk_documents(chunk)
    out = {}
    for split in job.splits:
        texts = [doc for doc_split, doc in docs if doc_split == split]
        if texts:
            out[split] = (_encoder(job).encode(texts).tobytes(), len(texts))
    return Counter(split for split, _ in docs), out


def build_token_arrays(corpus: CorpusConfig, splits: tuple[str, ...], tokenizer: Tokenizer,
                       cache_dir: Path | None = None, workers: int | Workers | None = None,
                       progress: bool | None = None, require: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Encode the splits of a corpus in one pass and write their cache entries; their manifests.
    A local corpus must have documents in every split (in those of `require`, if given)."""
    workers = workers_of(workers)
    paths = {split: token_array_paths(corpus, split, tokenizer, cache_dir) for split in splits}
    for _, manifest_path in paths.values():
        manifest_path.unlink(missing_ok=True)  # an entry is incomplete until its new manifest lands
        remove_stale_temporaries(manifest_path.parent)  # what a killed build of this entry left (xling train too)
    dtype = token_dtype(tokenizer.vocab_size)
    n_tokens, n_docs = Counter(), Counter()
    digests = {split: hashlib.sha256() for split in splits}
    counts = Counter()
    # in worker processes each encodes with one thread; in this process alone, with `workers` threads
    job = _EncodeJob.of(tokenizer, splits, 1)
    try:
        read = splits if corpus.test else None  # held-out files of its own: only these splits' files are read
        with ExitStack() as files, Progress(f"tokens ({', '.join(splits)})", corpus_size(corpus, read), progress) as bar:
            out = {split: files.enter_context(atomic_write(paths[split][0])) for split in splits}
            chunks = workers.map(_encode_chunk, iter_chunks(corpus, read), job,
                                 inline_state=dataclasses.replace(job, threads=workers.count))
            for chunk, (chunk_counts, encoded) in chunks:
                for split, (tokens, documents) in encoded.items():
                    out[split].write(tokens)
                    digests[split].update(tokens)
                    n_tokens[split] += len(tokens) // dtype.itemsize
                    n_docs[split] += documents
                counts.update(chunk_counts)
                bar.update(chunk.size, sum(chunk_counts.values()), sum(len(t) for t, _ in encoded.values()) // dtype.itemsize)
            check_split_counts(corpus, counts, require or read or SPLITS)  # before the files are renamed
    finally:
        _ENCODERS.clear()  # this process's, if it encoded itself
    manifests = {}
    for split in splits:
        manifests[split] = {
            "source": dataclasses.asdict(corpus),
            "fingerprint": corpus_fingerprint(corpus, split),
            "split": split,
            "tokenizer_sha256": tokenizer.sha256,
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.str,
            "n_tokens": int(n_tokens[split]),
            "n_documents": n_docs[split],
            "sha256": digests[split].hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "xling_version": __version__,
            "format_version": FORMAT_VERSION,
        }
        atomic_write_json(paths[split][1], manifests[split])
    return manifests


def token_array_paths(corpus: CorpusConfig, split: str, tokenizer: Tokenizer,
                      cache_dir: Path | None = None) -> tuple[Path, Path]:
    """(tokens .bin, manifest .json) of a split's cache entry (they may not exist yet)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache_dir / "tokens" / array_key(corpus, split, tokenizer)
    return entry / f"{split}.bin", entry / f"{split}.json"


def missing_splits(corpus: CorpusConfig, tokenizer: Tokenizer, cache_dir: Path | None = None,
                   splits: tuple[str, ...] | None = None, verify: bool = False) -> tuple[str, ...]:
    """The splits (default: all the corpus has) without a usable cache entry; a damaged one is reported."""
    missing = []
    for split in splits or corpus_splits(corpus):
        bin_path, manifest_path = token_array_paths(corpus, split, tokenizer, cache_dir)
        manifest = read_json(manifest_path, default=None)
        if not _is_valid(bin_path, manifest, verify):
            if manifest is not None:
                log.warning(f"cached token array {bin_path} does not match its manifest (damaged); rebuilding it")
            missing.append(split)
    return tuple(missing)


def token_array(corpus: CorpusConfig, split: str, tokenizer: Tokenizer, cache_dir: Path | None = None,
                verify: bool = True, workers: int | Workers | None = None, progress: bool | None = None,
                alone: bool = False) -> np.memmap:
    """The split's token stream (documents + eod) as a read-only memmap; built on first use.

    A cached entry is checked against its manifest (size, and the sha256 unless verify=False:
    a few ms per MB); a damaged one is reported (a warning) and rebuilt. Building one split
    builds every other missing split of the corpus in the same pass over it, unless `alone`
    (evaluating a run: then only this split must have documents, so its text alone is enough).
    """
    require_split(corpus, split)
    bin_path, manifest_path = token_array_paths(corpus, split, tokenizer, cache_dir)
    if missing_splits(corpus, tokenizer, cache_dir, (split,), verify):
        if alone:
            build_token_arrays(corpus, (split,), tokenizer, cache_dir, workers, progress, require=(split,))
        else:
            every = corpus_splits(corpus)  # holds `split` (require_split)
            others = missing_splits(corpus, tokenizer, cache_dir, tuple(s for s in every if s != split))
            splits = tuple(s for s in every if s == split or s in others)
            build_token_arrays(corpus, splits, tokenizer, cache_dir, workers, progress)
    manifest = read_json(manifest_path, default=None)
    return np.memmap(bin_path, dtype=np.dtype(manifest["dtype"]), mode="r", shape=(manifest["n_tokens"],))


def read_manifest(corpus: CorpusConfig, split: str, tokenizer: Tokenizer, cache_dir: Path | None = None) -> dict:
    """The manifest of a split's token array, building the array first if needed."""
    token_array(corpus, split, tokenizer, cache_dir)
    return read_json(token_array_paths(corpus, split, tokenizer, cache_dir)[1], default=None)


def token_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id occurs (e.g. to bin embeddings by training frequency)."""
    return np.bincount(np.asarray(tokens), minlength=vocab_size)
