"""SentencePiece BPE tokenizers, trained on a corpus's train split and cached by content.

Settings follow the paper (§2): BPE with byte fallback, pad=0, unk=1, an end-of-document
symbol at id 2, no BOS/EOS, digits split. `<eod>` is a *control* symbol: it is never produced
by encoding text (a document that happens to contain the string "<eod>" stays ordinary text),
and the token-array builder appends it between documents.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import sentencepiece as spm

from ..config import CorpusConfig
from ..errors import XlingError
from ..fsio import atomic_write, atomic_write_json, default_cache_dir, json_key, read_json
from .corpora import corpus_fingerprint, load_documents

log = logging.getLogger(__name__)

# Bumped whenever the training settings below change, so cached tokenizers are retrained.
TOKENIZER_VERSION = 1
PAD_ID, UNK_ID, EOD_ID = 0, 1, 2
EOD_PIECE = "<eod>"
# Training sentences are cut to at most this many characters (<= 4 UTF-8 bytes each), well
# under MAX_SENTENCE_BYTES, so SentencePiece never silently skips an over-long "sentence".
MAX_SENTENCE_CHARS = 4000
MAX_SENTENCE_BYTES = 4 * MAX_SENTENCE_CHARS
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def training_sentences(texts: Iterable[str]) -> Iterator[str]:
    """Documents are long (Bible chapters, whole files): feed SentencePiece sentence-sized pieces."""
    for text in texts:
        for sentence in _SENTENCE_END.split(text):
            for start in range(0, len(sentence), MAX_SENTENCE_CHARS):
                piece = sentence[start:start + MAX_SENTENCE_CHARS].strip()
                if piece:
                    yield piece


class Tokenizer:
    """A loaded SentencePiece model plus the identity (sha256) of its file."""

    pad_id, unk_id, eod_id = PAD_ID, UNK_ID, EOD_ID

    def __init__(self, model: bytes, path: Path | None = None):
        self._sp = spm.SentencePieceProcessor(model_proto=model)
        self.sha256 = hashlib.sha256(model).hexdigest()
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        return cls(path.read_bytes(), path)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Batch-encode (multi-threaded inside SentencePiece); no eod is added."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.encode takes a list of strings")
        return self._sp.encode(list(texts), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def pieces(self) -> list[str]:
        """The piece string of every id, in id order (used to merge two vocabularies by string)."""
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}, path={self.path})"


def _vocab_error(exc: RuntimeError, vocab_size: int) -> XlingError | None:
    """Translate SentencePiece's vocabulary-size complaints into a one-line hint, if it is one."""
    message = str(exc)
    too_high = re.search(r"Vocabulary size (?:is )?too high.*?<= *(\d+)", message)
    if too_high:
        return XlingError(f"tokenizer.vocab_size {vocab_size} is too large for this corpus "
                          f"(at most {too_high.group(1)}): lower tokenizer.vocab_size")
    too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_low:
        return XlingError(f"tokenizer.vocab_size {vocab_size} is too small for the characters of this corpus "
                          f"(at least {too_low.group(1)}): raise tokenizer.vocab_size")
    return None


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_path: Path) -> Tokenizer:
    """Train a deterministic BPE model on `texts` and write it atomically to `model_path`."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=training_sentences(texts), model_writer=model,
            model_type="bpe", vocab_size=vocab_size, byte_fallback=True, split_digits=True,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1, control_symbols=[EOD_PIECE],
            character_coverage=0.9995, max_sentence_length=MAX_SENTENCE_BYTES,
            num_threads=1, minloglevel=2)  # one thread: byte-identical models run to run
    except RuntimeError as exc:
        error = _vocab_error(exc, vocab_size)
        if error is None:
            raise
        raise error from None
    model_path = Path(model_path)
    with atomic_write(model_path) as f:
        f.write(model.getvalue())
    return Tokenizer(model.getvalue(), model_path)


def tokenizer_key(corpora: list[CorpusConfig], vocab_size: int) -> str:
    identity = {"corpora": [corpus_fingerprint(c) for c in corpora], "vocab_size": vocab_size,
                "version": TOKENIZER_VERSION}
    return json_key(identity)


def _cached(path: Path) -> Tokenizer | None:
    """The cached tokenizer at `path` if its bytes match the sha256 its manifest recorded, else None.

    A model without a manifest is an entry whose writing was interrupted; one that does not match
    (swapped, truncated, damaged) is reported. Either way the caller trains it again.
    """
    manifest = read_json(path.with_suffix(".json"), default=None)
    if not path.is_file() or not isinstance(manifest, dict):
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() == manifest.get("sha256"):
        try:
            return Tokenizer(data, path)
        except RuntimeError:  # matches its manifest but SentencePiece cannot read it
            pass
    log.warning(f"cached tokenizer {path} does not match its manifest (damaged or replaced); training it again")
    return None


def get_tokenizer(corpora: list[CorpusConfig], vocab_size: int, cache_dir: Path | None = None) -> Tokenizer:
    """The tokenizer trained on the train split of `corpora` (one: per-language; two: joint), cached.

    The cache entry is sp.model plus sp.json (its sha256, written last): a model is used only when
    it is the one that was trained, since a different one would silently change every perplexity.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / "tokenizers" / tokenizer_key(corpora, vocab_size) / "sp.model"
    tokenizer = _cached(path)
    if tokenizer is None:
        texts = chain.from_iterable(load_documents(c, "train") for c in corpora)
        tokenizer = train_tokenizer(texts, vocab_size, path)
        atomic_write_json(path.with_suffix(".json"), {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size,
                                                      "corpora": [corpus_fingerprint(c) for c in corpora],
                                                      "version": TOKENIZER_VERSION})
    return tokenizer
