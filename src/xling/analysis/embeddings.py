"""Embedding alignment of clone pairs: cos(E[i], E[clone(i)]) against all pairs, and by training frequency."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.stream import TrainStream
from ..errors import XlingError

BINS_PER_DECADE = 4


def clone_pairs(table: torch.Tensor, lang_a: int, lang_b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base ids, model ids in a, model ids in b) of every cloned id: anchors and pad (never cloned) are skipped."""
    ids_a, ids_b = table[lang_a].numpy(), table[lang_b].numpy()
    base = np.arange(len(ids_a))
    keep = ids_a != ids_b
    return base[keep], ids_a[keep], ids_b[keep]


def pair_cosines(vectors: torch.Tensor, ids_a: np.ndarray, ids_b: np.ndarray) -> np.ndarray:
    """cos(vectors[a_i], vectors[b_i]) for every pair i."""
    va, vb = vectors[torch.as_tensor(ids_a)].float(), vectors[torch.as_tensor(ids_b)].float()
    return F.cosine_similarity(va, vb, dim=-1).numpy().astype(np.float64)


def _cosine_sum(vectors: torch.Tensor) -> float:
    """Sum of cos(u_i, u_j) over the ordered pairs i != j, in O(n d): sum_ij u_i.u_j = |sum_i u_i|^2."""
    unit = F.normalize(vectors.double(), dim=-1)
    total = unit.sum(0)
    return float(total @ total - (unit * unit).sum())


def mean_pairwise_cosine(vectors: torch.Tensor) -> float:
    """Exact mean cosine over all pairs i != j."""
    n = len(vectors)
    return _cosine_sum(vectors) / (n * (n - 1)) if n >= 2 else float("nan")


MIN_BIN_PAIRS = 5  # a bin's baseline from fewer clone pairs is too noisy to read a difference against


def other_pairs_cosine(rows: torch.Tensor, clone_cosine_sum: float) -> float | None:
    """Mean cosine over the pairs of `rows` (n clone pairs: the first n rows' clones are the last n) that
    are not clone pairs, in O(n d); None (JSON null) for fewer than MIN_BIN_PAIRS clone pairs."""
    n = len(rows) // 2
    if n < MIN_BIN_PAIRS:
        return None
    return (_cosine_sum(rows) - 2 * clone_cosine_sum) / (2 * n * (2 * n - 2))  # each clone pair counted twice


def frequency_bins(counts: np.ndarray, values: dict[str, np.ndarray], per_decade: int = BINS_PER_DECADE,
                   baselines: dict | None = None) -> list[dict]:
    """Mean of each value array per log-frequency bin [10^(k/per_decade), 10^((k+1)/per_decade)).

    Tokens never seen in training get their own bin (lo = hi = 0). Empty bins are left out.
    `baselines`: name -> a function of a bin's selection (a boolean mask) giving that bin's baseline,
    stored as `<name>_all_pairs`.
    """
    counts = np.asarray(counts)
    top = int(np.ceil(per_decade * np.log10(max(int(counts.max(initial=1)), 1)))) + 2
    edges = 10.0 ** (np.arange(top + 1) / per_decade)
    index = np.where(counts > 0, np.searchsorted(edges, counts, side="right") - 1, -1)
    bins = []
    for k in np.unique(index):
        sel = index == k
        lo, hi = (0.0, 0.0) if k < 0 else (float(edges[k]), float(edges[k + 1]))
        bins.append({"lo": lo, "hi": hi, "n": int(sel.sum()),
                     **{name: float(np.mean(v[sel])) for name, v in values.items()},
                     **{f"{name}_all_pairs": baseline(sel) for name, baseline in (baselines or {}).items()}})
    return bins


def embedding_similarity(matrices: dict[str, torch.Tensor], table: torch.Tensor, lang_a: int, lang_b: int,
                         counts: np.ndarray, present: np.ndarray | None = None) -> dict:
    """Clone-pair cosine of each embedding matrix vs its all-pairs baseline, overall and by frequency.

    `counts[base_id]` is the training frequency; `present[model_id]` (optional) marks rows that
    exist at all (word2vec has no vector for a token it never saw).
    """
    base, ids_a, ids_b = clone_pairs(table, lang_a, lang_b)
    if present is not None:
        keep = present[ids_a] & present[ids_b]
        base, ids_a, ids_b = base[keep], ids_a[keep], ids_b[keep]
    if len(base) == 0:
        raise XlingError("the two languages share every id (frac_clone 0): there are no clone pairs to compare")
    seen = counts[base] > 0
    out, per_token, baselines = {"pairs": len(base), "pairs_seen": int(seen.sum())}, {}, {}
    for name, matrix in matrices.items():
        cos = pair_cosines(matrix, ids_a, ids_b)
        per_token[name] = cos
        both = matrix[torch.as_tensor(np.concatenate([ids_a, ids_b]))]
        seen_rows = matrix[torch.as_tensor(np.concatenate([ids_a[seen], ids_b[seen]]))]
        # (the paper's mean is over every clone pair; beside it, only the tokens of the training text: a token it
        # never has keeps an output row pushed down alike in both languages, a pair near 1, and an input row at its
        # random start, a pair near 0; neither is learned alignment)
        out[name] = {"clone_pairs": float(cos.mean()), "all_pairs": mean_pairwise_cosine(both),
                     "seen": {"clone_pairs": float(cos[seen].mean()), "all_pairs": mean_pairwise_cosine(seen_rows)}
                     if seen.any() else {"clone_pairs": None, "all_pairs": None}}
        # per bin too: rows trained alike (rare ones, pushed along one direction) are similar to any
        # row of their bin, so a bin's clone-pair cosine means alignment only above its own baseline
        baselines[name] = lambda sel, m=matrix, c=cos: other_pairs_cosine(
            m[torch.as_tensor(np.concatenate([ids_a[sel], ids_b[sel]]))], float(c[sel].sum()))
    out["by_frequency"] = frequency_bins(counts[base], per_token, baselines=baselines)
    return out


def training_counts(setup, source: int = 0, budget_rows: int = 0, seq_len: int = 1, seed: int = 0) -> np.ndarray:
    """How often each base id occurs in a text source's training split; under a pinned budget (train.budget_tokens,
    its `budget_rows` windows of `seq_len`), in the windows a monolingual run of that budget reads with `seed`, each
    as often as it is read: the authors count the first 1x of the monolingual stream, not all of a larger corpus."""
    width, tokens = setup.table.shape[1], np.asarray(setup.tokens(source, "train"))
    if not budget_rows:
        return np.bincount(tokens, minlength=width)[:width]
    language = list(setup.source_of_language).index(source)
    stream = TrainStream(setup, np.full(budget_rows, language), seq_len, seed)
    reads = np.bincount(stream.windows_of(0, budget_rows), minlength=stream.windows[source])
    weights = np.repeat(reads, seq_len)  # a window's inputs: its first seq_len tokens
    return np.bincount(tokens[:len(weights)], weights=weights, minlength=width)[:width].astype(np.int64)


# --------------------------------------------------------------------------- the command
