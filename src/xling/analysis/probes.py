"""Held-out parallel probes for the alignment measures: the same text in two languages, never seen in training.

Clones: windows of one held-out split written through both languages' id tables (position t is position t). A real
pair: the Bibles' probe books verse by verse, or your own held-out test files document by document, packed into
sequences while both sides fit (`parallel_probes`; segments longer than a probe are left out, and said).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..config import PROBE_SEQUENCES
from ..data.bible import PROBE_BOOKS, parallel_verses
from ..data.corpora import load_documents
from ..errors import XlingError

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # probes left out, warned of once in this process (not for every run and checkpoint)


@dataclass
class Probes:
    """Parallel probe sequences in two languages (1-D model-id tensors: inputs plus one target).

    `positional`: the two sides are the same text under two id tables, so position t of one
    side is position t of the other (clones); otherwise tokens are aligned by matching.
    """

    a: list[torch.Tensor]
    b: list[torch.Tensor]
    positional: bool
    source: str  # where the text came from, for the report
    left_out: dict | None = None  # {count, of, unit}: held-out segments longer than a probe on a side, of all

    def __len__(self) -> int:
        return len(self.a)


def probe_split(corpus) -> str:
    """The Bible's probe books (never in any split); a local corpus's test split."""
    return "probe" if corpus.name == "bible" else "test"


def clone_probes(setup, lang_a: int, lang_b: int, seq_len: int,
                 max_sequences: int = PROBE_SEQUENCES) -> Probes:
    """Held-out windows of the shared text source, written in both languages."""
    source = setup.source_of_language[lang_a]
    split = probe_split(setup.corpora[source])
    base = torch.from_numpy(setup.tokens(source, split).astype(np.int64))
    n = min(max_sequences, (len(base) - 1) // seq_len)
    if n < 1:
        raise XlingError(f"the {split} split has fewer than {seq_len + 1} tokens: no alignment probes; "
                         "use a corpus with more held-out text")
    windows = base[torch.arange(n)[:, None] * seq_len + torch.arange(seq_len + 1)]
    a, b = setup.to_model(lang_a, windows), setup.to_model(lang_b, windows)
    # a changed word order moves tokens: then they are matched, as for a real pair
    positional = setup.word_order(lang_a) == setup.word_order(lang_b)
    return Probes(list(a), list(b), positional=positional, source=f"{split} split, {n} windows of {seq_len} tokens")


def pack_pairs(pairs_a: list[list[int]], pairs_b: list[list[int]], max_len: int,
               min_len: int = 0) -> list[tuple[list[int], list[int]]]:
    """Pack consecutive aligned segments into sequence pairs, each side at most `max_len` ids and at least `min_len`.

    A pair is closed when adding the next segment would overflow either side; a segment that
    alone is longer than `max_len` on either side is dropped (it cannot fit any sequence), and so
    is a closed pair with a side shorter than `min_len` (the authors keep 128-512 tokens of 512).
    """
    packed, cur_a, cur_b = [], [], []
    for seg_a, seg_b in zip(pairs_a, pairs_b):
        if len(seg_a) > max_len or len(seg_b) > max_len or not seg_a or not seg_b:
            continue
        if len(cur_a) + len(seg_a) > max_len or len(cur_b) + len(seg_b) > max_len:
            packed.append((cur_a, cur_b))
            cur_a, cur_b = [], []
        cur_a, cur_b = cur_a + seg_a, cur_b + seg_b
    packed.append((cur_a, cur_b))
    return [(a, b) for a, b in packed if len(a) >= max(min_len, 1) and len(b) >= max(min_len, 1)]


def parallel_texts(corpus_a, corpus_b) -> tuple[list[str], list[str], str, str]:
    """Held-out text in two languages, segment i of one translating segment i of the other, and where it is from:
    and by what unit: the Bibles' probe books verse by verse, or your held-out test files (corpus.test) by document."""
    if corpus_a.name == corpus_b.name == "bible":
        verses = parallel_verses(corpus_a, corpus_b, PROBE_BOOKS)
        return [v[1] for v in verses], [v[2] for v in verses], "probe books (Luke, Acts)", "verse"
    if corpus_a.name != "bible" and corpus_b.name != "bible" and corpus_a.test and corpus_b.test:
        docs_a, docs_b = load_documents(corpus_a, "test"), load_documents(corpus_b, "test")
        if len(docs_a) != len(docs_b):
            raise XlingError(f"the two languages' test files ({', '.join(corpus_a.test)}; {', '.join(corpus_b.test)}) "
                             f"hold {len(docs_a)} and {len(docs_b)} documents (empty ones dropped): alignment pairs "
                             "them by position, so give the same documents, translated, in both")
        return docs_a, docs_b, "test files", "document"
    raise XlingError("alignment of a real language pair needs parallel text: two Bible translations (corpus.name: "
                     "bible), or your own text with held-out test files that translate each other document by "
                     "document (corpus.test, and languages.second.test or one per language of languages.corpora)")


def parallel_probes(setup, lang_a: int, lang_b: int, seq_len: int,
                    max_sequences: int = PROBE_SEQUENCES) -> Probes:
    """Held-out parallel text in both languages (parallel_texts), segment-aligned and packed into sequences."""
    corpora = [setup.corpora[setup.source_of_language[lang]] for lang in (lang_a, lang_b)]
    *texts, where, unit = parallel_texts(*corpora)
    sides = []
    for lang, segments in zip((lang_a, lang_b), texts):
        tokenizer = setup.tokenizers[setup.source_of_language[lang]]
        sides.append([setup.to_model(lang, ids).tolist() for ids in tokenizer.encode(segments)])
    packed = pack_pairs(sides[0], sides[1], seq_len + 1, min_len=seq_len // 4)[:max_sequences]  # paper: 128 of 512
    longer = [max(len(x), len(y)) for x, y in zip(*sides)]
    too_long = sum(n > seq_len + 1 for n in longer)  # (the longest: a biased sample)
    if not packed and min(longer, default=0) > seq_len + 1:
        raise XlingError(f"no parallel probe sequence fits the model's seq_len: the shortest of the {len(longer)} "
                         f"held-out {unit}s takes {min(longer)} tokens on its longer side, a probe at most "
                         f"{seq_len + 1}: use a longer model.seq_len"
                         + ("" if where.startswith("probe books") else ", or shorter held-out documents (a sentence "
                            "per line, translated line by line)"))
    if not packed:  # they fit, but pack into no pair of at least a quarter of a probe on each side
        raise XlingError(f"the {len(longer)} held-out {unit}s pack into no parallel probe of at least {seq_len // 4} "
                         "tokens on each side: give more held-out text (translations of about the same length), or "
                         "align a model of a shorter seq_len")
    left_out = {"count": too_long, "of": len(longer), "unit": unit} if too_long else None
    if left_out and str(left_out) not in _WARNED:
        _WARNED.add(str(left_out))  # once, not for every run and checkpoint
        log.warning(f"alignment probes: {too_long} of the {len(longer)} held-out {unit}s "
                    f"{'is' if too_long == 1 else 'are'} longer than the model's sequence ({seq_len + 1} tokens) on a "
                    "side and left out (the longest, so the probes are a biased sample; alignment.json and the study's "
                    "report say so)")
    to_tensor = lambda ids: torch.tensor(ids, dtype=torch.long)
    return Probes([to_tensor(a) for a, _ in packed], [to_tensor(b) for _, b in packed], positional=False,
                  source=f"{where}, {len(packed)} {unit}-packed sequences of <= {seq_len + 1} tokens"
                  + (f" ({too_long} of {len(longer)} {unit}s longer than that on a side left out)" if too_long else ""),
                  left_out=left_out)


def make_probes(cfg, setup, lang_a: int, lang_b: int, max_sequences: int = PROBE_SEQUENCES) -> Probes:
    seq_len = cfg.model.seq_len
    if setup.source_of_language[lang_a] == setup.source_of_language[lang_b]:
        return clone_probes(setup, lang_a, lang_b, seq_len, max_sequences)
    return parallel_probes(setup, lang_a, lang_b, seq_len, max_sequences)
