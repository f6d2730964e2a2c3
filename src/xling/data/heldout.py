"""Held-out files listed in the wrong order: each language's own held-out text (corpus.valid and .test with
languages.corpora, or a pair's corpus.test and languages.second.test) should read like that language's training text.

Character frequencies tell languages apart: between the built-in Bibles of different languages their total variation
distance is 0.12-0.8, between the training and test books of one translation 0.03-0.04, between two English
translations 0.05. A list is said to be out of order only where another order of some of its languages fits them more
than twice as well, so two varieties of one language, which cannot be told apart this way, never are.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..config import CorpusConfig, RunConfig
from .corpora import chunk_documents, iter_chunks, language_names

log = logging.getLogger(__name__)

SAMPLE_CHARS = 200_000  # of each text: enough for stable character frequencies, read in well under a second


def character_frequencies(corpus: CorpusConfig, split: str) -> dict[str, float]:
    """The share of each character in the first SAMPLE_CHARS of a split's documents."""
    counts, n = Counter(), 0
    for chunk in iter_chunks(corpus, (split,)):
        for doc_split, doc in chunk_documents(chunk):
            if doc_split == split:
                counts.update(doc[:SAMPLE_CHARS - n])
                n = min(SAMPLE_CHARS, n + len(doc))
            if n >= SAMPLE_CHARS:
                break
        if n >= SAMPLE_CHARS:
            break
    total = sum(counts.values()) or 1
    return {char: count / total for char, count in counts.items()}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    return 0.5 * sum(abs(p.get(char, 0.0) - q.get(char, 0.0)) for char in p.keys() | q.keys())


def out_of_order(corpora: list[CorpusConfig], names: list[str]) -> str | None:
    """One line naming each held-out file that reads like another language's training text (every language of a
    swap), or None. Only languages with held-out files of their own (corpus.test) are compared."""
    if len(corpora) < 2 or not all(c.test and c.name != "bible" for c in corpora):
        return None
    training = [character_frequencies(c, "train") for c in corpora]
    for split in ("test", "valid"):
        if not all(getattr(c, split) for c in corpora):
            continue
        held = [character_frequencies(c, split) for c in corpora]
        distance = np.array([[total_variation(t, h) for h in held] for t in training])
        _, best = linear_sum_assignment(distance)  # training text i -> the held-out file that reads most like it
        # judged cycle by cycle: the languages in place would hide a swap in a long list
        wrong = [i for cycle in _cycles(best) if distance[cycle, cycle].sum() > 2 * distance[cycle, best[cycle]].sum()
                 for i in cycle]
        if wrong:
            given = lambda j, split=split: f"given for {names[j]} ({', '.join(getattr(corpora[j], split))})"
            first, *rest = wrong
            return (f"the held-out {split} text {given(best[first])} reads like {names[first]}'s training text, not "
                    f"{names[best[first]]}'s" + "".join(f"; the one {given(best[i])} like {names[i]}'s" for i in rest)
                    + f" (character frequencies): give one held-out file per language in the order of the languages "
                    f"({', '.join(names)})")
    return None


def _cycles(permutation: np.ndarray) -> list[list[int]]:
    """The cycles of a permutation longer than one (a language whose held-out file is another's, and so on)."""
    seen, cycles = set(), []
    for start in range(len(permutation)):
        cycle, i = [], start
        while i not in seen:
            seen.add(i)
            cycle.append(i)
            i = int(permutation[i])
        if len(cycle) > 1:
            cycles.append(cycle)
    return cycles


def warn_if_out_of_order(cfg: RunConfig, corpora: list[CorpusConfig]) -> None:
    """One warning line where a real pair's or many languages' held-out files seem listed in another order: they would
    score every language on another's text, silently (`xling prepare` and a run's data both check)."""
    if cfg.languages.kind == "real" and (why := out_of_order(corpora, language_names(cfg))):
        log.warning(why)
