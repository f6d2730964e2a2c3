"""SentencePiece BPE tokenizers, trained on a corpus's train split and cached by content.

Settings follow the paper (§2): BPE with byte fallback, pad=0, unk=1, an end-of-document
symbol at id 2, no BOS/EOS, digits split. `<eod>` is a *control* symbol: it is never produced
by encoding text (a document that happens to contain the string "<eod>" stays ordinary text),
and the token-array builder appends it between documents.

A tokenizer trains on at most SAMPLE_SENTENCES sentences of the train split. Below that every
sentence is used, in corpus order (exactly as before sampling existed); above it, a seeded sample
of that many, still in corpus order. The sample is found in one streaming pass, in parallel
workers: each sentence gets a pseudo-random priority from the seed, a hash of its document's text
and its place in the document, and the SAMPLE_SENTENCES smallest are kept (ties: the earlier), so
the sample depends on neither the number of workers nor how the input is chunked, and memory
stays bounded.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import io
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm

from ..config import CorpusConfig, TokenizerConfig
from ..errors import XlingError
from ..fsio import atomic_write, atomic_write_json, default_cache_dir, json_key, read_json
from .corpora import (
    SPLITS,
    check_split_counts,
    chunk_documents,
    corpus_fingerprint,
    corpus_size,
    iter_chunks,
)
from .parallel import Progress, Workers, ordered_map, workers_of

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
# At most this many sentences train a tokenizer (a seeded sample of the train split above it;
# changing it or the seed changes the tokenizers of larger corpora: bump TOKENIZER_VERSION).
SAMPLE_SENTENCES = 1_000_000
SAMPLE_SEED = 0x5EED
# A sample trains with as many SentencePiece threads as there are workers (at most this many).
# The pieces do not depend on the thread count (checked on the Bibles and a 1 GB corpus, and by the
# tests), but the count is written into the model file: it is written as 1 there, so a model file
# is the same for any number of workers. Below the bound training keeps one thread, as before.
MAX_TRAIN_THREADS = 16
_ALL = np.uint64(2**64 - 1)


def training_sentences(texts: Iterable[str]) -> Iterator[str]:
    """Documents are long (Bible chapters, whole files): feed SentencePiece sentence-sized pieces."""
    for text in texts:
        for sentence in _SENTENCE_END.split(text):
            for start in range(0, len(sentence), MAX_SENTENCE_CHARS):
                piece = sentence[start:start + MAX_SENTENCE_CHARS].strip()
                if piece:
                    yield piece


# A brought tokenizer separates documents with the first of these it has (a control or special symbol).
EOD_NAMES = (EOD_PIECE, "</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")


class Tokenizer:
    """A loaded SentencePiece model plus the identity (sha256) of its file.

    Special ids come from the model: pad (None when it has none), unk, and the end-of-document id
    (the first of EOD_NAMES it has as a control symbol, else its EOS): 0, 1 and 2 for the models
    xling trains. `words`: the model is one xling trained, whose documents may be encoded a word
    at a time (words.py); a brought model is encoded a whole document at a time.
    """

    kind, suffix = "sentencepiece", ".model"

    def __init__(self, model: bytes, path: Path | None = None, words: bool = True):
        self._sp = spm.SentencePieceProcessor(model_proto=model)
        self.model_bytes = model
        self.sha256 = hashlib.sha256(model).hexdigest()
        self.path = path
        self.words = words
        sp = self._sp
        self.pad_id = sp.pad_id() if sp.pad_id() >= 0 else None
        self.unk_id = sp.unk_id()
        specials = [sp.piece_to_id(name) for name in EOD_NAMES]
        specials = [i for i in specials if i != self.unk_id and sp.is_control(i)]
        self.eod_id = specials[0] if specials else (sp.eos_id() if sp.eos_id() >= 0 else None)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        return cls(path.read_bytes(), path)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, texts: list[str], threads: int | None = None) -> list[list[int]]:
        """Batch-encode (multi-threaded inside SentencePiece: all cores unless `threads`); no eod is added."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.encode takes a list of strings")
        return self._sp.encode(list(texts), out_type=int, num_threads=threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def pieces(self) -> list[str]:
        """The piece string of every id, in id order (used to merge two vocabularies by string)."""
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}, path={self.path})"


def smallest_vocab_size() -> int:
    """The least tokenizer.vocab_size a config may ask for."""
    return next(f.metadata["between"][0] for f in dataclasses.fields(TokenizerConfig) if f.name == "vocab_size")


class VocabularyTooLarge(XlingError):
    """More pieces asked for than the corpus has; `limit`: the most it has (a joint tokenizer's caller rephrases)."""

    def __init__(self, vocab_size: int, limit: int):
        least = smallest_vocab_size()
        super().__init__(f"tokenizer.vocab_size {vocab_size} is too large for this corpus (at most {limit}): lower "
                         "tokenizer.vocab_size" if limit >= least else f"this corpus is too small for a tokenizer: it "
                         f"has at most {limit} pieces, and tokenizer.vocab_size is at least {least}: give more text")
        self.vocab_size, self.limit = vocab_size, limit

    def __reduce__(self):  # (an error that crosses a process pool is rebuilt from its arguments)
        return VocabularyTooLarge, (self.vocab_size, self.limit)


def _vocab_error(exc: RuntimeError, vocab_size: int) -> XlingError | None:
    """Translate SentencePiece's vocabulary-size complaints into a one-line hint, if it is one."""
    message = str(exc)
    too_high = re.search(r"Vocabulary size (?:is )?too high.*?<= *(\d+)", message)
    if too_high:
        return VocabularyTooLarge(vocab_size, int(too_high.group(1)))
    too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_low:
        return XlingError(f"tokenizer.vocab_size {vocab_size} is too small for the characters of this corpus "
                          f"(at least {too_low.group(1)}): raise tokenizer.vocab_size")
    return None


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_path: Path) -> Tokenizer:
    """Train a deterministic BPE model on `texts` (documents) and write it atomically to `model_path`."""
    return train_on_sentences(training_sentences(texts), vocab_size, model_path)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _fields(data: bytes):
    """(field number, start of the field, start of its value, end) of each field of a protobuf message."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _read_varint(data, pos)
        kind, value = key & 7, pos
        if kind == 0:
            _, pos = _read_varint(data, pos)
        elif kind == 2:
            length, value = _read_varint(data, pos)
            pos = value + length
        else:
            pos += {1: 8, 5: 4}[kind]
        yield key >> 3, start, value, pos


def _with_num_threads(model: bytes, threads: int) -> bytes:
    """A serialized SentencePiece model with trainer_spec.num_threads (field 16 of field 2) set to
    `threads`, every other byte as it was."""
    for number, start, value, end in _fields(model):
        if number == 2:
            spec = model[value:end]
            for field, _, f_value, f_end in _fields(spec):
                if field == 16:
                    spec = spec[:f_value] + _varint(threads) + spec[f_end:]
                    return model[:start] + _varint(2 << 3 | 2) + _varint(len(spec)) + spec + model[end:]
    raise ValueError("no trainer_spec.num_threads in the model")


def sentencepiece_spec(model: bytes) -> dict:
    """What exporting a SentencePiece model needs from its settings: model_type (1 unigram, 2 BPE),
    the normaliser's precompiled character map, add_dummy_prefix, remove_extra_whitespaces."""
    spec = {"model_type": 1, "charsmap": b"", "add_dummy_prefix": True, "remove_extra_whitespaces": True}
    for number, _, value, end in _fields(model):
        if number == 2:  # trainer_spec
            for field, _, f_value, _ in _fields(model[value:end]):
                if field == 3:
                    spec["model_type"] = _read_varint(model[value:end], f_value)[0]
        elif number == 3:  # normalizer_spec
            normalizer = model[value:end]
            for field, _, f_value, f_end in _fields(normalizer):
                if field == 2:
                    spec["charsmap"] = normalizer[f_value:f_end]
                elif field in (3, 4):
                    key = "add_dummy_prefix" if field == 3 else "remove_extra_whitespaces"
                    spec[key] = bool(_read_varint(normalizer, f_value)[0])
    return spec


def train_on_sentences(sentences: Iterable[str | bytes], vocab_size: int, model_path: Path,
                       threads: int = 1) -> Tokenizer:
    """Train on sentences as `training_sentences` cuts them (str, or their UTF-8). One thread gives
    the models of xling <= 0.2; with more the model file records one all the same (the pieces are
    the same)."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model,
            model_type="bpe", vocab_size=vocab_size, byte_fallback=True, split_digits=True,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1, control_symbols=[EOD_PIECE],
            character_coverage=0.9995, max_sentence_length=MAX_SENTENCE_BYTES,
            num_threads=threads, minloglevel=2)
    except RuntimeError as exc:
        error = _vocab_error(exc, vocab_size)
        if error is None:
            raise
        raise error from None
    data = model.getvalue() if threads == 1 else _with_num_threads(model.getvalue(), 1)
    model_path = Path(model_path)
    with atomic_write(model_path) as f:
        f.write(data)
    return Tokenizer(data, model_path)


# ----------------------------------------------------------------------------- the sentence sample


def sample_priorities(documents: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Pseudo-random uint64 priorities of sentences from their document's hash and their position
    in it (splitmix64): the same sentence of the same document always gets the same one."""
    with np.errstate(over="ignore"):
        x = documents ^ np.uint64(SAMPLE_SEED * 0x9E3779B97F4A7C15 % 2**64)
        x = x + (positions.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


_PUNCTUATION = np.zeros(256, dtype=bool)
_PUNCTUATION[[ord(c) for c in ".!?;:"]] = True


def _sentence_spans(docs: list[str]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray] | None:
    """The sentences of whitespace-collapsed documents exactly as `training_sentences` cuts them,
    found in their UTF-8 bytes: (bytes, starts, ends, document of each); None where that is not
    certain (a piece over MAX_SENTENCE_CHARS, a stray newline or space)."""
    data = ("\n".join(docs) + "\n").encode("utf-8", "surrogatepass")
    b = np.frombuffer(data, dtype=np.uint8)
    doc_ends = np.flatnonzero(b == 10)
    if len(doc_ends) != len(docs):
        return None
    # a gap after . ! ? ; : is a single space in a whitespace-collapsed document
    cuts = np.flatnonzero((b[1:] == 32) & _PUNCTUATION[b[:-1]]) + 1
    ends = np.sort(np.concatenate([cuts, doc_ends]))
    starts = np.concatenate([[0], ends[:-1] + 1])
    if ((ends - starts > MAX_SENTENCE_CHARS) | (ends == starts)).any() or (b[starts] == 32).any() \
            or (b[ends - 1] == 32).any():
        return None
    return data, starts, ends, np.searchsorted(doc_ends, starts)


def _gather(data: bytes, starts: np.ndarray, lengths: np.ndarray) -> bytes:
    """The byte ranges [start, start + length) of `data`, one after the other."""
    if not len(lengths):
        return b""
    ends = np.cumsum(lengths)
    return np.frombuffer(data, np.uint8)[np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]))].tobytes()


def split_sentences(blob: bytes, lengths: np.ndarray) -> list[str]:
    """The sentences packed in `blob` (UTF-8, one after the other, `lengths` bytes each)."""
    ends = np.cumsum(lengths).tolist()
    return [blob[a:z].decode("utf-8", "surrogatepass") for a, z in zip([0, *ends[:-1]], ends)]


def sample_candidates(docs: list[str], hashes: list[int], threshold=_ALL) -> tuple[int, np.ndarray, bytes, np.ndarray]:
    """(how many sentences the documents have; of those whose priority is at most `threshold`, in
    order: their priorities, their UTF-8 packed together and the byte length of each). The
    documents must be whitespace-collapsed. Packed, they pass between processes cheaply."""
    spans = _sentence_spans(docs) if docs else None
    if spans is None:
        pieces = [list(training_sentences([doc])) for doc in docs]
        sentences = [sentence for doc in pieces for sentence in doc]
        doc_of = np.repeat(np.arange(len(docs)), [len(doc) for doc in pieces]).astype(np.int64)
    else:
        data, starts, ends, doc_of = spans
    n = len(doc_of)
    priorities = sample_priorities(np.asarray(hashes, dtype=np.uint64)[doc_of], np.arange(n) - np.searchsorted(doc_of, doc_of))
    keep = np.flatnonzero(priorities <= threshold)
    if spans is None:
        encoded = [sentences[i].encode("utf-8", "surrogatepass") for i in keep]
        return n, priorities[keep], b"".join(encoded), np.array([len(e) for e in encoded], dtype=np.int64)
    lengths = (ends - starts)[keep]
    return n, priorities[keep], _gather(data, starts[keep], lengths), lengths


def _scan_chunk(_, item):
    """Worker: a chunk's documents per split, and those of its train sentences whose priority is
    at most the current threshold (every one until the sample is full), packed."""
    _, chunk, threshold = item
    docs = chunk_documents(chunk, hashes=True)
    train = [(doc, digest) for split, doc, digest in docs if split == "train"]
    return Counter(split for split, *_ in docs), *sample_candidates([d for d, _ in train], [h for _, h in train],
                                                                      threshold)


class _Sample:
    """The `size` sentences with the smallest priorities seen so far (ties: the earlier), in corpus
    order: per chunk (priorities, starts, byte lengths, UTF-8 they are in). A part's bytes are
    packed again only when less than half of them is still kept."""

    def __init__(self, size: int):
        self.size, self.threshold, self.count = size, _ALL, 0
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, bytes]] = []

    def add(self, priorities: np.ndarray, blob: bytes, lengths: np.ndarray) -> None:
        if len(priorities):
            self.parts.append((priorities, np.cumsum(lengths) - lengths, lengths, blob))
            self.count += len(priorities)
        if self.count > self.size + self.size // 2:
            self._prune()

    def _prune(self) -> None:
        priorities = np.concatenate([part[0] for part in self.parts])
        kept = np.argpartition(priorities, self.size - 1)[:self.size]
        last = priorities[kept].max()
        keep = priorities < last  # then the earliest of those equal to the last one taken
        keep[np.flatnonzero(priorities == last)[:self.size - int(keep.sum())]] = True
        parts, at = [], 0
        for part_priorities, starts, lengths, blob in self.parts:
            mask = keep[at:at + len(lengths)]
            at += len(lengths)
            if mask.all():
                parts.append((part_priorities, starts, lengths, blob))
            elif mask.any():
                starts, lengths = starts[mask], lengths[mask]
                if 2 * int(lengths.sum()) < len(blob):
                    blob, starts = _gather(blob, starts, lengths), np.cumsum(lengths) - lengths
                parts.append((part_priorities[mask], starts, lengths, blob))
        self.parts, self.count, self.threshold = parts, self.size, last

    def __len__(self) -> int:
        if self.count > self.size:
            self._prune()
        return self.count

    def drain(self) -> Iterator[bytes]:
        """The sentences in corpus order, as UTF-8 (SentencePiece takes either), each part dropped
        once handed over. A part that is not valid UTF-8 (lone surrogates from JSON) goes as str,
        for SentencePiece to treat as before."""
        if self.count > self.size:
            self._prune()
        self.parts.reverse()
        while self.parts:
            _, starts, lengths, blob = self.parts.pop()
            pieces = [blob[a:a + n] for a, n in zip(starts.tolist(), lengths.tolist())]
            try:
                b"".join(pieces).decode("utf-8")
            except UnicodeDecodeError:
                yield from (piece.decode("utf-8", "surrogatepass") for piece in pieces)
                continue
            yield from pieces
        self.count = 0

    def sentences(self) -> list[str]:
        """The sentences in corpus order (emptying the sample)."""
        return [s.decode("utf-8") if isinstance(s, bytes) else s for s in self.drain()]


def sample_sentences(corpora: list[CorpusConfig], workers: int | Workers | None = None,
                     progress: bool | None = None, size: int | None = None) -> tuple[_Sample, int]:
    """(the training sentences, how many the train splits have): every sentence of the train
    splits of `corpora` up to `size` (default SAMPLE_SENTENCES), a seeded sample above it."""
    sample = _Sample(size or SAMPLE_SENTENCES)
    counts = [Counter() for _ in corpora]

    def items():
        for corpus_index, corpus in enumerate(corpora):
            for chunk in iter_chunks(corpus, _learns_from(corpus)):
                yield corpus_index, chunk, sample.threshold

    total, sentences = sum(corpus_size(c, _learns_from(c)) for c in corpora), 0
    with Progress("tokenizer sample", total, progress) as bar:
        chunks = ordered_map(_scan_chunk, items(), workers)
        for (corpus_index, chunk, _), (split_counts, n_sentences, priorities, blob, lengths) in chunks:
            counts[corpus_index].update(split_counts)
            sentences += n_sentences
            sample.add(priorities, blob, lengths)
            bar.update(chunk.size, sum(split_counts.values()))
    for corpus, corpus_counts in zip(corpora, counts):
        check_split_counts(corpus, corpus_counts, _learns_from(corpus) or SPLITS)
    return sample, sentences


def _learns_from(corpus: CorpusConfig) -> tuple[str, ...] | None:
    """A corpus with its own held-out files: only its train files make (and key) a tokenizer; None: every file,
    split by hash (the train split is known only by reading them all)."""
    return ("train",) if corpus.test else None


def _release_memory() -> None:
    """Give freed heap memory back to the system: glibc keeps it, and the sample's would otherwise
    stay in this process's footprint while the token arrays are built."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def tokenizer_key(corpora: list[CorpusConfig], vocab_size: int) -> str:
    identity = {"corpora": [corpus_fingerprint(c, *_learns_from(c) or ()) for c in corpora], "vocab_size": vocab_size,
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


def get_tokenizer(corpora: list[CorpusConfig], vocab_size: int, cache_dir: Path | None = None,
                  workers: int | Workers | None = None, progress: bool | None = None) -> Tokenizer:
    """The tokenizer trained on the train split of `corpora` (one: per-language; two: joint), cached.

    The cache entry is sp.model plus sp.json (its sha256, written last): a model is used only when
    it is the one that was trained, since a different one would silently change every perplexity.
    `workers` processes (default: all cores) read the corpus; `progress` shows a bar (None: on a terminal).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / "tokenizers" / tokenizer_key(corpora, vocab_size) / "sp.model"
    tokenizer = _cached(path)
    if tokenizer is None:
        workers = workers_of(workers)
        sample, total = sample_sentences(corpora, workers, progress)
        used = len(sample)
        threads = min(workers.count, MAX_TRAIN_THREADS) if used < total else 1
        tokenizer = train_on_sentences(sample.drain(), vocab_size, path, threads)
        _release_memory()
        manifest = {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size,
                    "corpora": [corpus_fingerprint(c, *_learns_from(c) or ()) for c in corpora],
                    "version": TOKENIZER_VERSION}
        if used < total:  # a sample: say how large (absent when every sentence was used, as before)
            manifest["sentences"] = {"train_split": total, "sampled": used, "seed": SAMPLE_SEED}
        atomic_write_json(path.with_suffix(".json"), manifest)
    return tokenizer
