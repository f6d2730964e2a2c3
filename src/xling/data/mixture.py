"""Mixtures and schedules: which language every training sequence is in, and what each got.

Which language a training sequence gets is a pure function of (seed, global row index) through
a counter-based hash, so resumed runs, gradient accumulation and several processes all see the
same data without sharing any random state. `Mixture` is the one typed view of a run's
languages that analyses and reports read (effective p, which languages trained, their shares).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import RunConfig, parse_schedule
from .corpora import language_names

# --------------------------------------------------------------------------- mixtures


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based hash (SplitMix64 finaliser): uint64 -> well-mixed uint64."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniform(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers that depend only on (seed, stream, index)."""
    key = _splitmix64(np.array([seed * 1_000_003 + stream], dtype=np.uint64))
    mixed = _splitmix64(np.asarray(index, dtype=np.uint64) ^ key)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


LANGUAGE_STREAM = 1  # the hash stream used for language choice (other streams: data order)


def choose_languages(seed: int, rows: np.ndarray, p: np.ndarray | float, num_other: int) -> np.ndarray:
    """Language of each global row: 0 with probability 1 - p, else one of 1..num_other uniformly.

    One uniform number per row decides both: u < p picks a non-base language, and u / p
    (uniform on [0, 1) given u < p) picks which, so p is split evenly over the others.
    """
    u = uniform(seed, LANGUAGE_STREAM, rows)
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), u.shape)
    picked = u < p
    ratio = np.divide(u, p, out=np.zeros_like(u), where=picked)  # uniform on [0, 1) where picked
    other = 1 + np.minimum((ratio * num_other).astype(np.int64), num_other - 1)
    return np.where(picked, other, 0).astype(np.int64)


# --------------------------------------------------------------------------- schedules


def stage_of_step(step: np.ndarray | int, total_steps: int, num_stages: int) -> np.ndarray:
    """Stage index of each step when `total_steps` are split into `num_stages` equal stages."""
    step = np.asarray(step, dtype=np.int64)
    return np.minimum(step * num_stages // max(total_steps, 1), num_stages - 1)


def p_per_step(p: float, schedule: str, total_steps: int) -> np.ndarray:
    """Total non-base-language probability for every step of a run."""
    stages = parse_schedule(schedule) if schedule else [p]
    return np.asarray(stages)[stage_of_step(np.arange(total_steps), total_steps, len(stages))]


def language_plan(seed: int, total_steps: int, batch_size: int, p: float, schedule: str, num_other: int) -> np.ndarray:
    """The language of every training sequence of a run: shape [total_steps * batch_size]."""
    rows = np.arange(total_steps * batch_size)
    p_rows = np.repeat(p_per_step(p, schedule, total_steps), batch_size)
    return choose_languages(seed, rows, p_rows, num_other)


def tokens_per_language(plan: np.ndarray, rows_done: int, num_languages: int, seq_len: int) -> list[int]:
    """Exact number of training tokens each language has received after `rows_done` sequences."""
    counts = np.bincount(plan[:rows_done], minlength=num_languages)
    return [int(c) * seq_len for c in counts]


# --------------------------------------------------------------------------- the typed view


@dataclass(frozen=True)
class Mixture:
    """A run's languages and how its training mixes them, read from the config alone.

    Analyses and reports ask this, not the raw config: which languages trained, the effective
    p of a schedule, each language's expected share of the training sequences.
    """

    names: tuple[str, ...]
    kind: str  # clone | real
    vocab: str  # "clone" for clones, else the real pair's disjoint | anchored | joint
    p: float  # the static total probability of the non-base languages (unused with a schedule)
    schedule: str  # e.g. "0.1_0.9", "" for a static mixture
    stages: tuple[float, ...]  # the schedule's per-stage p, () for a static mixture
    num_clones: int
    frac_clone: float

    @classmethod
    def of(cls, cfg: RunConfig) -> Mixture:
        lang = cfg.languages
        return cls(tuple(language_names(cfg)), lang.kind, "clone" if lang.kind == "clone" else lang.vocab, lang.p,
                   lang.schedule, tuple(parse_schedule(lang.schedule)) if lang.schedule else (),
                   lang.num_clones if lang.kind == "clone" else 1, lang.frac_clone)

    @property
    def effective_p(self) -> float:
        """The non-base share over the whole run: p, or the mean of a schedule's equal stages."""
        return float(np.mean(self.stages)) if self.stages else self.p

    def expected_shares(self) -> list[float]:
        """Each language's expected share of the training sequences: 1 - p, then p / k per other language."""
        others = len(self.names) - 1
        p = self.effective_p
        return [1.0 - p] + [p / others] * others

    @property
    def trained(self) -> list[str]:
        """The languages the run trains on (a monolingual ladder run trains one)."""
        return [name for name, share in zip(self.names, self.expected_shares()) if share > 0]

    @property
    def monolingual(self) -> bool:
        return len(self.trained) == 1

    @property
    def multilingual(self) -> bool:
        """More than one language trained: something to compare, align or transfer between."""
        return len(self.trained) > 1
