"""Encoding documents a word at a time, with a bounded cache of encoded words.

SentencePiece never merges across a space: with the default split_by_whitespace its pieces
carry "▁" only at their start, and its normalizer (NFKC rules, whitespace clean-up) maps no
sequence that spans a space. So a document's ids are the concatenation of the ids of its
space-separated words, each encoded alone (a word SentencePiece normalises to nothing gives
none). Natural text repeats words (Zipf), so most words are found in the cache and only new ones
go through SentencePiece: several times faster, with exactly the same ids (the tests check that
against SentencePiece on every built-in Bible and on awkward Unicode).

The cache is a hash table in numpy arrays keyed by a word's UTF-8 bytes (words of up to
KEY_BYTES bytes, packed exactly into three integers, so there are no false matches) and looked up
for a whole batch at once; longer words go through a dict. Documents must not contain a newline
(the stream's documents have their whitespace collapsed); a batch with one is encoded by
SentencePiece directly.
"""

from __future__ import annotations

import itertools

import numpy as np

from .tokenizer import Tokenizer

# At most this many words are remembered (about 100 MB); when full the cache starts over, so
# memory stays bounded however many distinct words a corpus has.
MAX_WORDS = 1 << 20
KEY_BYTES = 24
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)
_MIX = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)]


def _mix(k0, k1, k2, length) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = k0 * _MIX[0] ^ k1 * _MIX[1] ^ k2 * _MIX[2] ^ length.astype(np.uint64) * _MIX[3]
        h ^= h >> np.uint64(29)
        h *= _MIX[1]
        return h ^ (h >> np.uint64(32))


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest id type that holds the vocabulary."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def encode_documents(docs: list[str], tokenizer, threads: int | None = None, dtype=None) -> np.ndarray:
    """Concatenate the documents' ids, each document followed by the end-of-document id: the tokenizer on whole
    documents, no word cache."""
    encoded = tokenizer.encode(docs, threads) if threads else tokenizer.encode(docs)
    tokens = np.empty(sum(len(ids) + 1 for ids in encoded), dtype=dtype or token_dtype(tokenizer.vocab_size))
    pos = 0
    for ids in encoded:
        tokens[pos:pos + len(ids)] = ids
        tokens[pos + len(ids)] = tokenizer.eod_id
        pos += len(ids) + 1
    return tokens


class WordEncoder:
    """Documents -> one token stream, each document followed by the end-of-document id."""

    def __init__(self, tokenizer: Tokenizer, dtype: np.dtype, threads: int = 1, max_words: int = MAX_WORDS):
        self.tokenizer, self.dtype, self.threads, self.max_words = tokenizer, np.dtype(dtype), threads, max_words
        self.table_bits = max(10, int(2 * max_words - 1).bit_length())  # at most half full
        self.clear()

    def clear(self) -> None:
        # a row per place: the key's three words, then its length << 32 | its word number (0: empty)
        self.table = np.zeros((1 << self.table_bits, 4), dtype=np.uint64)
        self.long: dict[bytes, int] = {}
        # the words' ids: word w is ids[starts[w]: starts[w] + lengths[w]]; word 0 is the end of a document
        self.starts = np.zeros(1024, dtype=np.int64)
        self.lengths = np.zeros(1024, dtype=np.int64)
        self.ids = np.zeros(1 << 16, dtype=self.dtype)
        self.lengths[0], self.ids[0] = 1, self.tokenizer.eod_id
        self.words, self.used = 1, 1

    # ------------------------------------------------------------------ the table

    def _find(self, keys: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(word of every key or -1, the place where each missing key would go)."""
        mask = (1 << self.table_bits) - 1
        place = (_mix(keys[:, 0], keys[:, 1], keys[:, 2], length) & np.uint64(mask)).astype(np.int64)
        word = np.full(len(keys), -1, dtype=np.int64)
        active, p, k, ln = np.arange(len(keys)), place, keys, length.astype(np.uint64)
        while active.size:
            rows = np.take(self.table, p, axis=0)  # (much faster than self.table[p])
            meta = rows[:, 3]
            hit = ((meta >> np.uint64(32)) == ln) & (rows[:, 0] == k[:, 0]) & (rows[:, 1] == k[:, 1]) \
                & (rows[:, 2] == k[:, 2])
            word[active[hit]] = (meta[hit] & np.uint64(0xFFFFFFFF)).astype(np.int64)
            go_on = ~hit & (meta != 0)
            active, p, k, ln = active[go_on], (p[go_on] + 1) & mask, k[go_on], ln[go_on]
            place[active] = p
        return word, place

    def _insert(self, keys: np.ndarray, length: np.ndarray, words: np.ndarray, place: np.ndarray) -> None:
        """Put new (absent, distinct) keys into the table, each from the place `_find` found for it."""
        meta = (length.astype(np.uint64) << np.uint64(32)) | words.astype(np.uint64)
        todo, mask = np.arange(len(keys)), (1 << self.table_bits) - 1
        while todo.size:
            p = place[todo]
            # two new keys may want one place: the first takes it, the others look further
            _, first = np.unique(p, return_index=True)
            take = np.zeros(todo.size, dtype=bool)
            take[first] = True
            take &= self.table[p, 3] == 0
            t = todo[take]
            self.table[p[take], :3], self.table[p[take], 3] = keys[t], meta[t]
            todo = todo[~take]
            place[todo] = (place[todo] + 1) & mask

    def _store(self, words: list[str]) -> np.ndarray:
        """Encode new words with SentencePiece and keep their ids; their word numbers."""
        encoded = self.tokenizer.encode(words, self.threads)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        total = int(lengths.sum())
        numbers = np.arange(self.words, self.words + len(words))
        if self.words + len(words) > len(self.starts):
            size = max(self.words + len(words), 2 * len(self.starts))
            self.starts, self.lengths = np.resize(self.starts, size), np.resize(self.lengths, size)
        if self.used + total > len(self.ids):
            self.ids = np.resize(self.ids, max(self.used + total, 2 * len(self.ids)))
        self.lengths[numbers] = lengths
        self.starts[numbers] = self.used + np.cumsum(lengths) - lengths
        self.ids[self.used:self.used + total] = np.fromiter(itertools.chain.from_iterable(encoded), dtype=self.dtype,
                                                              count=total)
        self.used += total
        self.words += len(words)
        return numbers

    # ------------------------------------------------------------------ documents

    def encode(self, docs: list[str]) -> np.ndarray:
        if not docs:
            return np.zeros(0, dtype=self.dtype)
        try:
            data = ("\n".join(docs) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: let SentencePiece say what it says
            return self._direct(docs)
        if data.count(b"\n") != len(docs):  # a document with a newline in it
            return self._direct(docs)
        padded = np.frombuffer(data + bytes(KEY_BYTES), dtype=np.uint8)
        b = padded[:len(data)]
        newline = b == 10
        sep = newline | (b == 32)
        word = ~sep
        starts = np.flatnonzero(word[1:] & sep[:-1]) + 1
        if word[0]:
            starts = np.concatenate([[0], starts])
        ends = np.flatnonzero(word[:-1] & sep[1:]) + 1  # the data ends with a newline
        numbers = self._numbers(data, padded, starts, ends - starts, may_clear=True)
        if numbers is None:  # the cache was full: it started over
            numbers = self._numbers(data, padded, starts, ends - starts, may_clear=False)
        if numbers is None:  # more distinct words than the cache holds, in one batch
            return self._direct(docs)
        # each document's words, then its end (word 0)
        numbers = np.insert(numbers, np.searchsorted(starts, np.flatnonzero(newline)), 0)
        lengths = self.lengths[numbers]
        ends = np.cumsum(lengths)
        positions = np.repeat(self.starts[numbers] - (ends - lengths), lengths) + np.arange(int(ends[-1]))
        return self.ids[positions]

    def _numbers(self, data: bytes, padded: np.ndarray, starts: np.ndarray, length: np.ndarray,
                 may_clear: bool) -> np.ndarray | None:
        """The word number of every word; None when the cache is too full for the new words (then,
        if allowed, it starts over)."""
        numbers = np.zeros(len(starts), dtype=np.int64)
        short = np.flatnonzero(length <= KEY_BYTES)
        s, ln = starts[short], length[short]
        u64 = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
        keys = np.stack([u64[s] & _MASKS[np.minimum(ln, 8)], u64[s + 8] & _MASKS[np.clip(ln - 8, 0, 8)],
                         u64[s + 16] & _MASKS[np.clip(ln - 16, 0, 8)]], axis=1)
        found, place = self._find(keys, ln)
        numbers[short] = found
        missing = short[found < 0]
        long = np.flatnonzero(length > KEY_BYTES)
        long_words = [data[a:a + m] for a, m in zip(starts[long].tolist(), length[long].tolist())]
        long_new = list(dict.fromkeys(w for w in long_words if w not in self.long))
        if missing.size or long_new:
            absent = np.flatnonzero(found < 0)
            unique, first, inverse = np.unique(np.column_stack([keys[absent], ln[absent].astype(np.uint64)]),
                                               axis=0, return_index=True, return_inverse=True)
            new = len(unique) + len(long_new)
            if self.words + new > self.max_words:
                if may_clear:
                    self.clear()
                    return None
                if self.words + new > (1 << self.table_bits) // 2:
                    return None
            at, size = starts[missing[first]].tolist(), length[missing[first]].tolist()
            texts = [data[a:a + m].decode("utf-8") for a, m in zip(at, size)]
            stored = self._store(texts + [w.decode("utf-8") for w in long_new])
            self._insert(unique[:, :3], unique[:, 3], stored[:len(unique)], place[absent[first]])
            numbers[missing] = stored[:len(unique)][inverse.reshape(-1)]
            self.long.update(zip(long_new, stored[len(unique):].tolist()))
        if long.size:
            numbers[long] = [self.long[w] for w in long_words]
        return numbers

    def _direct(self, docs: list[str]) -> np.ndarray:
        return encode_documents(docs, self.tokenizer, self.threads, self.dtype)
