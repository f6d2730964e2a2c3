"""Token streams of a corpus split, encoded once and cached as memory-mapped arrays.

Layout: `<cache>/tokens/<key>/<split>.bin` (raw little-endian uint16/uint32) and
`<split>.json` (a manifest saying where the tokens came from). The key hashes the corpus
fingerprint, the tokenizer's sha256, the split and FORMAT_VERSION, so a changed corpus or
tokenizer lands in a new directory instead of silently reusing stale tokens. The manifest is
written last and atomically: an entry without a manifest is incomplete and gets rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import CorpusConfig
from ..fsio import atomic_write, atomic_write_json, default_cache_dir, json_key, read_json, sha256_file
from .corpora import corpus_fingerprint, load_documents
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Bumped whenever the on-disk layout or the stream construction changes.
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def array_key(corpus: CorpusConfig, split: str, tokenizer: Tokenizer) -> str:
    identity = {"corpus": corpus_fingerprint(corpus), "tokenizer": tokenizer.sha256, "split": split,
                "format": FORMAT_VERSION}
    return json_key(identity)


def encode_documents(docs: list[str], tokenizer: Tokenizer) -> np.ndarray:
    """Concatenate the documents' ids, each document followed by the end-of-document id."""
    encoded = tokenizer.encode(docs)
    tokens = np.empty(sum(len(ids) + 1 for ids in encoded), dtype=token_dtype(tokenizer.vocab_size))
    pos = 0
    for ids in encoded:
        tokens[pos:pos + len(ids)] = ids
        tokens[pos + len(ids)] = tokenizer.eod_id
        pos += len(ids) + 1
    return tokens


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


def _build(corpus: CorpusConfig, split: str, tokenizer: Tokenizer, bin_path: Path, manifest_path: Path) -> None:
    docs = load_documents(corpus, split)
    tokens = encode_documents(docs, tokenizer)
    data = tokens.tobytes()
    manifest_path.unlink(missing_ok=True)  # the entry is incomplete until the new manifest lands
    with atomic_write(bin_path) as f:
        f.write(data)
    manifest = {
        "source": dataclasses.asdict(corpus),
        "fingerprint": corpus_fingerprint(corpus),
        "split": split,
        "tokenizer_sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
        "dtype": tokens.dtype.str,
        "n_tokens": int(tokens.size),
        "n_documents": len(docs),
        "sha256": hashlib.sha256(data).hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "xling_version": __version__,
        "format_version": FORMAT_VERSION,
    }
    atomic_write_json(manifest_path, manifest)


def token_array_paths(corpus: CorpusConfig, split: str, tokenizer: Tokenizer,
                      cache_dir: Path | None = None) -> tuple[Path, Path]:
    """(tokens .bin, manifest .json) of a split's cache entry (they may not exist yet)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = cache_dir / "tokens" / array_key(corpus, split, tokenizer)
    return entry / f"{split}.bin", entry / f"{split}.json"


def token_array(corpus: CorpusConfig, split: str, tokenizer: Tokenizer, cache_dir: Path | None = None,
                verify: bool = True) -> np.memmap:
    """The split's token stream (documents + eod) as a read-only memmap; built on first use.

    A cached entry is checked against its manifest (size, and the sha256 unless verify=False:
    a few ms per MB); a damaged one is reported (a warning) and rebuilt.
    """
    bin_path, manifest_path = token_array_paths(corpus, split, tokenizer, cache_dir)
    manifest = read_json(manifest_path, default=None)
    if not _is_valid(bin_path, manifest, verify):
        if manifest is not None:
            log.warning(f"cached token array {bin_path} does not match its manifest (damaged); rebuilding it")
        _build(corpus, split, tokenizer, bin_path, manifest_path)
        manifest = read_json(manifest_path, default=None)
    return np.memmap(bin_path, dtype=np.dtype(manifest["dtype"]), mode="r", shape=(manifest["n_tokens"],))


def read_manifest(corpus: CorpusConfig, split: str, tokenizer: Tokenizer, cache_dir: Path | None = None) -> dict:
    """The manifest of a split's token array, building the array first if needed."""
    token_array(corpus, split, tokenizer, cache_dir)
    return read_json(token_array_paths(corpus, split, tokenizer, cache_dir)[1], default=None)


def token_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id occurs (e.g. to bin embeddings by training frequency)."""
    return np.bincount(np.asarray(tokens), minlength=vocab_size)
