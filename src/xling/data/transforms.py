"""Synthetic languages that differ from their text in structure: word order changed within each sentence.

Derived languages after Deshpande et al. 2022 ("When is BERT Multilingual?"), built from a tokenizer's ids,
purely and deterministically: a language's split is reordered as one stream when a run first reads it, and
its windows are cut from that stream at batch time (the id tables of languages.py then apply as for any text):

- `inverted`: the words of each sentence in reverse order;
- `permuted`: the words of each sentence in a fixed order drawn once per sentence length (the same for
  every sentence of that length, never the identity);
- `clone` is the other transform of `languages.transforms`: the language's own row of the id table (its ids
  shifted), applied after the word order. Transforms compose in the order given.

Words and sentences come from the tokenizer's pieces (`PieceClasses`):
- a *word* starts at a piece that begins with SentencePiece's word-start marker "▁" and runs until the next
  one; pieces without it (the rest of a word, and punctuation written against it, e.g. "," or ";") stay with
  the word before them, so the pieces of a word keep their order;
- a piece made only of punctuation that holds a sentence end ".", "!" or "?" (".", "?", '."', "▁." ...)
  ends a sentence and never moves; neither do the special pieces (end of document, pad, unk). A window's
  sentences are the runs of pieces between such fixed pieces.

Limits, by construction:
- A whole split is transformed as one stream (`ordered_stream`), and training windows are cut from that
  stream, so training and evaluation see the same text: whole sentences in the language's order (a window
  may start or end inside a sentence, as any window of ordinary text does). Windows and rows given to
  `word_order` directly (alignment probes, transfer examples) are streams of their own: a part of a
  sentence at a row's edge is reordered among itself, and pieces before the first word start of a part
  (the tail of a word, or a closing quote after a sentence end) stay in place.
- A sentence end inside a piece with letters (no such pieces in SentencePiece's default models, which split
  punctuation from letters), an abbreviation ("e.g.") or a sentence without final punctuation is not seen as
  a boundary: the sentence runs on to the next boundary (a run warns where a brought tokenizer hides many
  sentence ends so: `hidden_end_share`, checked by `LanguageSetup.ordered_tokens`).
- A tokenizer without "▁" pieces (e.g. GPT-2's byte-level "Ġ") has no words here and is refused.

With these rules the segmentation of a window into fixed pieces, heads and words is the same before and
after a transform, so `inverted` applied twice is the identity and `permuted` is undone by `inverse=True`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import XlingError

WORD_START = "\u2581"  # SentencePiece's "▁"
SENTENCE_ENDS = ".!?"
WORD_ORDER = ("inverted", "permuted")  # the transforms that move tokens (`clone` is the id table's)
PERMUTATION_SEED = 0x5EED  # the permuted language: one fixed order per sentence length, for every run


@dataclass(frozen=True)
class PieceClasses:
    """Per token id of one tokenizer: whether it starts a word, and whether it is fixed (never moves)."""

    starts_word: np.ndarray  # bool [V]
    fixed: np.ndarray  # bool [V]
    ends: np.ndarray  # bool [V]: a piece of punctuation with a sentence end (fixed, as the special pieces are)
    hides_end: np.ndarray  # bool [V]: a sentence end written against letters ("▁house."): no boundary, not fixed


def piece_classes(pieces: list[str], special: list[int | None]) -> PieceClasses:
    """Classes of a tokenizer's pieces (in id order); `special`: ids that never move (end of document, pad, unk)."""
    ends, hides_end, starts = (np.zeros(len(pieces), dtype=bool) for _ in range(3))
    for i, piece in enumerate(pieces):
        text = piece.lstrip(WORD_START)
        end = any(c in SENTENCE_ENDS for c in text)
        ends[i] = end and not any(c.isalnum() for c in text)
        # a word with its full stop ("▁house."): not a number ("▁3.") nor an abbreviation's inner dot ("▁e.g" + ".")
        stem = text.rstrip(SENTENCE_ENDS)
        hides_end[i] = stem != text and stem.isalpha()
        starts[i] = piece.startswith(WORD_START)
    fixed = ends.copy()
    fixed[[i for i in special if i is not None and 0 <= i < len(pieces)]] = True
    if not starts.any():
        raise XlingError(f"word-order transforms need a tokenizer that marks word starts with '{WORD_START}' "
                         "(SentencePiece): this one has no such piece")
    return PieceClasses(starts & ~fixed, fixed, ends, hides_end & ~fixed)


HIDDEN_ENDS_WARN_SHARE = 0.1  # the share of a text's sentence ends hidden in pieces with letters that is worth a warning
SAMPLE_TOKENS = 1_000_000  # of a split: enough to count its sentence ends, read in milliseconds


def hidden_end_share(ids: np.ndarray, classes: PieceClasses) -> float:
    """The share of the sentence ends in the first SAMPLE_TOKENS of `ids` that are written against letters
    ("▁house."), where no sentence ends and words move across (0 where it has none)."""
    counts = np.bincount(np.asarray(ids[:SAMPLE_TOKENS], dtype=np.int64), minlength=len(classes.fixed))
    hidden, seen = int(counts[classes.hides_end].sum()), int(counts[classes.ends].sum())
    return hidden / (hidden + seen) if hidden else 0.0


@functools.cache
def _permutation(n: int) -> np.ndarray:
    """The permuted language's order of n words: slot k holds word order[k] (0-based); never the identity."""
    rng = np.random.default_rng([PERMUTATION_SEED, n])
    while True:
        order = rng.permutation(n)
        if n < 2 or (order != np.arange(n)).any():
            return order


def word_order(ids: np.ndarray, classes: PieceClasses, how: str, inverse: bool = False) -> np.ndarray:
    """Rows of token ids ([L] or [B, L], each row a stream of its own) with the words of every sentence reordered:
    `how` = inverted or permuted (`inverse`: undo permuted). Returns a new array of the same shape and dtype
    holding the same tokens (module docstring: what words and sentences are)."""
    if how not in WORD_ORDER:
        raise ValueError(f"word order must be one of {WORD_ORDER}, got {how!r}")
    rows = np.atleast_2d(np.asarray(ids))
    flat = rows.ravel()
    if not flat.size:
        return np.array(ids, copy=True)
    b, length = rows.shape
    fixed = classes.fixed[flat].reshape(b, length)
    starts = (classes.starts_word[flat] & ~classes.fixed[flat]).ravel()
    begins = np.ones((b, length), dtype=bool)  # a segment begins at each row's start, at and after each fixed piece
    begins[:, 1:] = fixed[:, 1:] | fixed[:, :-1]
    begins = begins.ravel()
    first = np.flatnonzero(begins)  # the first position of every segment
    segment = np.cumsum(begins) - 1
    counted = np.cumsum(starts)
    before = counted[first] - starts[first]  # word starts before each segment
    word = counted - before[segment]  # 1, 2, ... for the words of a segment; 0 for its head (and fixed pieces)
    words = np.maximum.reduceat(word, first)[segment]  # words in the segment of each position
    if how == "inverted":
        slot = np.where(word > 0, words + 1 - word, 0)
    else:
        slot = word.copy()
        for n in np.unique(words[words > 1]):
            order = _permutation(int(n))
            rank = order + 1 if inverse else np.argsort(order) + 1  # the slot of word j is rank[j - 1]
            sel = (words == n) & (word > 0)
            slot[sel] = rank[word[sel] - 1]
    positions = np.lexsort((np.arange(flat.size), slot, segment))
    return flat[positions].reshape(np.shape(ids))


def apply_word_order(ids: np.ndarray, classes: PieceClasses, transforms: tuple[str, ...]) -> np.ndarray:
    """The word-order transforms of a language (in order; `clone` is skipped: it is the id table's)."""
    for how in transforms:
        if how in WORD_ORDER:
            ids = word_order(ids, classes, how)
    return ids


# The version of what the word-order transforms do: raise it when that changes. It names the reordered
# streams cached on disk and is part of a reordering run's id (study.spec.config_hash), so raising it
# also gives every reordering run a new id: studies train them again.
ORDER_VERSION = 1


def ordered_chunks(ids: np.ndarray, classes: PieceClasses, transforms: tuple[str, ...],
                   chunk: int = 1 << 22) -> Iterator[np.ndarray]:
    """A whole split ([N], e.g. a memmapped token array) in a language's word order, as one stream, in pieces:
    the text that training windows are cut from and evaluation scores, so both see whole sentences in the
    same order. Each piece ends just after a fixed piece (a segment never spans a cut, so the pieces joined
    equal the whole stream transformed, at a bounded memory); a piece without any fixed piece is cut where
    it ends. Pieces keep the input's dtype."""
    start = 0
    while start < len(ids):
        stop = min(len(ids), start + chunk)
        part = np.asarray(ids[start:stop])
        if stop < len(ids):
            fixed = np.flatnonzero(classes.fixed[part])
            if len(fixed):
                stop = start + int(fixed[-1]) + 1
                part = part[: stop - start]
        yield apply_word_order(part, classes, transforms).astype(part.dtype, copy=False)
        start = stop


def ordered_stream(ids: np.ndarray, classes: PieceClasses, transforms: tuple[str, ...],
                   chunk: int = 1 << 22) -> np.ndarray:
    """`ordered_chunks` joined into one array (in memory)."""
    out = np.empty(len(ids), dtype=np.asarray(ids[:0]).dtype)
    start = 0
    for piece in ordered_chunks(ids, classes, transforms, chunk):
        out[start:start + len(piece)] = piece
        start += len(piece)
    return out
