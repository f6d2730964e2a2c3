"""The paper's published numbers (its §5), in one place, so reports can show them beside ours.

Each value belongs to a *setting*: which languages, how they are mixed, how long and how big
the model trained. Values read off a figure are marked approximate. Roles: "L1" is the base
language (EN1 / EN), "L2" every other language (the clones EN2..EN10, or FR).

The paper trained GPT-small (unless noted) on 1.2B tokens of books ("1x"); at CPU scale
our perplexities are not comparable in magnitude, and token efficiency only loosely (the paper's own
TEffs move with training length and model size); the directions of the effects are.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_MODELS = ("mini", "tiny", "small", "medium")
SOURCE = "Schäfer et al. 2024, arXiv 2404.07982"


@dataclass(frozen=True)
class Setting:
    """What identifies a published number. `p` is the total non-base probability (mean of a schedule)."""

    kind: str = "clone"  # clone | real | many (languages.corpora: beyond the paper)
    p: float = 0.5
    schedule: str = ""
    num_clones: int = 1
    frac_clone: float = 1.0
    vocab: str = ""  # real pairs: disjoint | anchored
    length: float = 1.0  # training length in the paper's 1x units (monolingual ladders: the data fraction)
    model: str = "small"
    order: str = ""  # a changed word order of a language (inverted, permuted: data.transforms); the paper has none

    def matches(self, other: Setting) -> bool:
        close = lambda a, b: abs(a - b) <= 1e-6 + 0.02 * abs(b)
        return (self.kind, self.schedule, self.num_clones, self.vocab, self.model, self.order) == (
            other.kind, other.schedule, other.num_clones, other.vocab, other.model, other.order
        ) and close(self.p, other.p) and close(self.frac_clone, other.frac_clone) and close(self.length, other.length)


@dataclass(frozen=True)
class Value:
    ppl: float | None = None
    teff: float | None = None
    approx: bool = False  # read off a figure
    where: str = ""  # table / figure in the paper


def _c(p, l1, l2, *, schedule="", k=1, length=1.0, model="small", approx=False, where="Table 1"):
    """A cloned setting: l1, l2 = (ppl, teff) of the base language and of every clone."""
    s = Setting("clone", p, schedule, k, 1.0, "", length, model)
    return s, {"L1": Value(*l1, approx, where), "L2": Value(*l2, approx, where)}


def _r(vocab, p, l1, l2, *, schedule=""):
    s = Setting("real", p, schedule, 1, 1.0, vocab, 1.0, "small")
    return s, {"L1": Value(*l1, where="Table 3"), "L2": Value(*l2, where="Table 3")}


def _mono(kind, role, fraction, ppl):
    p = 0.0 if role == "L1" else 1.0
    return Setting(kind, p, "", 1, 1.0, "", fraction, "small"), {role: Value(ppl, None, False, "§5 monolingual")}


N = None
PUBLISHED: tuple[tuple[Setting, dict[str, Value]], ...] = (
    # Monolingual GPT-small: PPL at 10 %, 50 %, 100 % of the budget (EN, and FR for the real pair).
    _mono("clone", "L1", 0.1, 48.36), _mono("clone", "L1", 0.5, 25.31), _mono("clone", "L1", 1.0, 21.93),
    _mono("real", "L1", 0.1, 48.36), _mono("real", "L1", 0.5, 25.31), _mono("real", "L1", 1.0, 21.93),
    _mono("real", "L2", 0.1, 34.06), _mono("real", "L2", 0.5, 18.41), _mono("real", "L2", 1.0, 16.02),
    # Table 1, cloned, 1x.
    _c(0.5, (26.13, 0.89), (26.14, 0.89)),
    _c(0.1, (22.46, 1.00), (32.81, 2.08)),
    _c(0.5, (26.53, 0.83), (24.44, 1.18), schedule="0.1_0.9"),
    _c(0.9, (35.54, 1.69), (35.74, 1.67), k=9),  # ten languages, 10 % each
    _c(0.5, (24.57, 1.15), (33.41, 3.56), k=9),  # EN1 50 % + 9 x 5.6 %
    # Longer training (GPT-small).
    _c(0.5, (23.35, 0.74), (23.36, 0.74), length=2, where="§5 longer training"),
    _c(0.1, (20.06, N), (23.88, 3.29), length=2, where="§5 longer training"),
    _c(0.5, (22.78, N), (20.42, N), schedule="0.1_0.9", length=2, where="§5 longer training"),
    _c(0.5, (22.17, 0.64), (22.18, 0.64), length=3, where="§5 longer training"),
    _c(0.1, (19.03, N), (22.27, 3.14), length=3, where="§5 longer training"),
    _c(0.5, (21.50, N), (19.26, N), schedule="0.1_0.9", length=3, where="§5 longer training"),
    _c(0.5, (21.49, N), (21.49, N), length=4, approx=True, where="Figure 2"),
    _c(0.1, (18.41, N), (21.36, N), length=4, approx=True, where="Figure 2"),
    _c(0.5, (N, 1.09), (N, 1.09), length=0.4, where="Figure 2"),
    # Model size at ~1.2B tokens (figure reads).
    _c(0.5, (36.0, N), (36.0, N), model="mini", approx=True, where="Figure 9"),
    _c(0.1, (31.6, N), (41.0, 3.4), model="mini", approx=True, where="Figure 9"),
    _c(0.5, (22.95, N), (22.95, N), model="medium", approx=True, where="Figure 9"),
    _c(0.1, (19.4, N), (22.3, 5.3), model="medium", approx=True, where="Figure 9"),
    # Sweep over p(EN2), 1x (Figure 1 left); 0.1 and 0.5 are in Table 1 above.
    _c(0.05, (N, N), (35.8, 3.3), approx=True, where="Figure 1"),
    _c(0.2, (N, N), (32.4, N), approx=True, where="Figure 1"),
    _c(0.3, (N, N), (29.65, N), where="Figure 1"),
    _c(0.4, (N, N), (27.63, N), where="Figure 1"),
    # Table 3: English/French with separate tokenizers, p = p(FR).
    _r("disjoint", 0.1, (22.47, 1.00), (31.89, 1.05)),
    _r("disjoint", 0.5, (26.44, 0.85), (19.39, 0.82)),
    _r("disjoint", 0.9, (43.51, 1.10), (16.45, 0.97)),
    _r("anchored", 0.1, (22.48, 1.00), (29.04, 1.27)),
    _r("anchored", 0.5, (25.97, 0.91), (19.01, 0.88)),
    _r("anchored", 0.9, (39.51, 1.33), (16.48, 0.96)),
    _r("anchored", 0.5, (28.90, 0.61), (19.33, 0.83), schedule="0.1_0.9"),
)  # fmt: skip


def cell(value: Value | None, attr: str) -> str:
    """The paper's `attr` ("ppl" or "teff") for a table: "2.08", "≈3.40" (read off a figure), or ""."""
    if value is None or getattr(value, attr) is None:
        return ""
    return f"{'≈' if value.approx else ''}{getattr(value, attr):.2f}"


def lookup(setting: Setting, role: str) -> Value | None:
    """The published value for a setting and a language role ("L1" base, "L2" other), if any."""
    for s, values in PUBLISHED:
        if s.matches(setting) and role in values:
            return values[role]
    return None


# --------------------------------------------------------------------------- alignment and transfer
# GPT-small, 1x (the paper's section 5). Keys: p = total probability of the non-base language.
PAPER_HIDDEN = {  # per layer 1..12, clones
    0.5: (.55, .79, .83, .88, .85, .83, .78, .66, .56, .46, .25, -.21),
    0.1: (.86, .93, .96, .96, .96, .96, .96, .95, .94, .90, .67, .11),
}
PAPER_GRADIENT = {("clone", 0.5): 0.072, ("clone", 0.1): 0.534,  # mean over block tensors
                  ("disjoint", 0.5): 0.045, ("disjoint", 0.1): 0.051,
                  ("anchored", 0.5): 0.170, ("anchored", 0.1): 0.138}
PAPER_EMBEDDING = {"input": {0.5: 0.03, 0.05: 0.28}, "output": {0.5: 0.27, 0.05: 0.39}}  # ≈, read off a figure
PAPER_ALL_PAIRS = {"input": 0.005, "output": 0.21}  # ≈
PAPER_TRANSFER = {"L1": "0.70–0.71", "L2": {0.05: 0.64, 0.1: 0.65, 0.2: 0.58, 0.3: 0.52, 0.4: 0.53, 0.5: 0.54}}  # GLUE mean
PAPER_GRAD_SEQUENCES = 500  # the authors' gradients: n_steps of compare_representations.py, under fp16 autocast
PAPER_REAL_HIDDEN_DELTA = 0.08  # EN/FR: |hidden cosine at 90/10 - at 50/50| <= 0.08 in every layer
