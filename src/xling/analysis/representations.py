"""Alignment measures beyond the paper's raw cosine, for the hidden states of two languages.

Small models store which language a text is in as a large offset shared by all its hidden
states; two languages' offsets point apart, so the raw cosine of translations can be negative
even where the rest of the representation agrees. Three measures look past it:
- centred cosine: each language's mean hidden state (per layer, from held-out text that is not
  scored) subtracted before the cosine of aligned tokens;
- linear CKA (Kornblith et al. 2019) of the aligned tokens' representations, per layer;
- translation retrieval: is a window's translation the nearest (centred, mean-pooled) window
  of the other language among all N scored windows? Chance is 1/N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same n items, x [n, d1] and y [n, d2]."""
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    return float((y.T @ x).square().sum() / ((x.T @ x).norm() * (y.T @ y).norm()))


def retrieval_accuracy(pooled_a: torch.Tensor, pooled_b: torch.Tensor) -> float:
    """How often window i of one language has window i of the other as its most similar (cosine)
    among all N; pooled_* [N, D], row i of both the same text."""
    sims = F.normalize(pooled_a.double(), dim=-1) @ F.normalize(pooled_b.double(), dim=-1).T
    return float((sims.argmax(dim=1) == torch.arange(len(sims))).double().mean())


class AlignedStates:
    """Accumulates, layer by layer, what the measures need from aligned token pairs of many sequences.

    `add(xa, xb, pooled_a, pooled_b)`: xa, xb [L, n, D] the raw hidden states of n aligned token
    pairs (token k of one language with its twin in the other); pooled_* [L, D] the centred mean of
    each side's sequence. CKA is kept as running sums (X^T X, Y^T Y, Y^T X, column sums), so it
    needs memory per layer, not per token.
    """

    def __init__(self, mean_a: torch.Tensor, mean_b: torch.Tensor):
        self.mean_a, self.mean_b = mean_a.double(), mean_b.double()  # [L, D]: the languages' offsets
        self.centred: list[torch.Tensor] = []  # per sequence [L]
        self.centred_baseline: list[torch.Tensor] = []  # per shuffled pair of sequences [L]
        self.pooled_a: list[torch.Tensor] = []
        self.pooled_b: list[torch.Tensor] = []
        self.sums = None

    def add(self, xa: torch.Tensor, xb: torch.Tensor) -> None:
        xa, xb = xa.double(), xb.double()
        ca, cb = xa - self.mean_a[:, None], xb - self.mean_b[:, None]
        self.centred.append(F.cosine_similarity(ca, cb, dim=-1).mean(-1))
        self.pooled_a.append(ca.mean(1))
        self.pooled_b.append(cb.mean(1))
        batch = (xa.transpose(1, 2) @ xa, xb.transpose(1, 2) @ xb, xb.transpose(1, 2) @ xa,
                 xa.sum(1), xb.sum(1), xa.shape[1])
        self.sums = batch if self.sums is None else tuple(s + b for s, b in zip(self.sums, batch))

    def add_baseline(self, xa: torch.Tensor, xb: torch.Tensor) -> None:
        """Token pairs of two sequences that are *not* translations, aligned as the real pairs are: their
        centred cosine is what the measure gives unrelated text (for a real pair, what the matching
        alone finds)."""
        ca, cb = xa.double() - self.mean_a[:, None], xb.double() - self.mean_b[:, None]
        self.centred_baseline.append(F.cosine_similarity(ca, cb, dim=-1).mean(-1))

    def cka(self) -> list[float]:
        """Linear CKA per layer over all the tokens added (the same as linear_cka on them all)."""
        sxx, syy, syx, sx, sy, n = self.sums
        cxx = sxx - sx[:, :, None] * sx[:, None, :] / n
        cyy = syy - sy[:, :, None] * sy[:, None, :] / n
        cyx = syx - sy[:, :, None] * sx[:, None, :] / n
        return (cyx.square().sum((1, 2)) / (cxx.norm(dim=(1, 2)) * cyy.norm(dim=(1, 2)))).tolist()

    def result(self) -> dict:
        """{centred, cka, retrieval}: each with per-layer values and their mean over layers."""
        n = len(self.centred)
        centred = torch.stack(self.centred).nanmean(0).tolist()
        a, b = torch.stack(self.pooled_a, dim=1), torch.stack(self.pooled_b, dim=1)  # [L, N, D]
        retrieval = [retrieval_accuracy(a[layer], b[layer]) for layer in range(len(a))]
        cka = self.cka()
        mean = lambda values: sum(values) / len(values)
        shuffled = torch.stack(self.centred_baseline).nanmean(0).tolist() if self.centred_baseline else None
        return {"centred": {"layers": centred, "mean": mean(centred),
                            **({"shuffled_baseline": {"layers": shuffled, "mean": mean(shuffled)}} if shuffled else {})},
                "cka": {"layers": cka, "mean": mean(cka)},
                "retrieval": {"layers": retrieval, "mean": mean(retrieval), "candidates": n, "chance": 1 / n}}
