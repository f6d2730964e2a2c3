"""Mixtures and schedules: which language every training sequence is in, and what each got.

Which language a training sequence gets is a pure function of (seed, global row index) through
a counter-based hash, so resumed runs, gradient accumulation and several processes all see the
same data without sharing any random state. `Mixture` is the one typed view of a run's
languages that analyses and reports read (effective p, which languages trained, their shares).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..config import RunConfig
from ..errors import XlingError
from ..notation import parse_schedule
from .corpora import language_index, language_names
from .transforms import WORD_ORDER

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


def choose_by_shares(seed: int, rows: np.ndarray, shares) -> np.ndarray:
    """Language of each global row when language l has share shares[l] (many languages): the uniform number of
    the row falls into l's interval [shares[0] + ... + shares[l-1], ... + shares[l]), so each language is picked
    with its share exactly (to the rounding of the sums) and one with share 0 never."""
    shares = np.asarray(shares, dtype=np.float64)
    u = uniform(seed, LANGUAGE_STREAM, rows)
    cumulative = np.cumsum(shares / shares.sum())
    last = int(np.flatnonzero(shares > 0)[-1])  # where rounding leaves u above the last sum
    return np.minimum(np.searchsorted(cumulative, u, side="right"), last).astype(np.int64)


def temperature_shares(sizes, temperature: float) -> list[float]:
    """Temperature sampling: shares proportional to size^(1/T) (T = 1: by size; larger T: flatter)."""
    weights = np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature)
    return (weights / weights.sum()).tolist()


def unimax_shares(sizes, budget: float, epochs: float) -> list[float]:
    """UniMax (Chung et al. 2023, Algorithm 1): from the smallest language up, each gets an equal part of the
    budget still left, at most `epochs` passes over its own text (sizes and budget in tokens); what a capped
    language leaves goes to the larger ones. Shares of the budget; an XlingError when the caps cannot fill it."""
    sizes = np.asarray(sizes, dtype=np.float64)
    left, shares = float(budget), np.zeros(len(sizes))
    for rank, lang in enumerate(np.argsort(sizes, kind="stable")):
        shares[lang] = min(left / (len(sizes) - rank), epochs * sizes[lang])
        left -= shares[lang]
    if left > 1e-9 * budget:
        passes = "pass" if epochs == 1 else "passes"
        raise XlingError(f"languages.unimax_epochs {epochs:g}: {epochs:g} {passes} over every language's text give "
                         f"{epochs * sizes.sum():,.0f} tokens, fewer than the run's {budget:,.0f}: raise "
                         "languages.unimax_epochs or train for fewer steps")
    return (shares / budget).tolist()


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


def share_plan(seed: int, total_steps: int, batch_size: int, shares) -> np.ndarray:
    """The language of every training sequence of a run of many languages (static shares)."""
    return choose_by_shares(seed, np.arange(total_steps * batch_size), shares)


def tokens_per_language(plan: np.ndarray, rows_done: int, num_languages: int, seq_len: int) -> list[int]:
    """Exact number of training tokens each language has received after `rows_done` sequences."""
    counts = np.bincount(plan[:rows_done], minlength=num_languages)
    return [int(c) * seq_len for c in counts]


# --------------------------------------------------------------------------- the typed view


def _table_rows(path: str) -> int | None:
    """How many languages a saved id table (.npy) has, from its header alone; None where it cannot be read (a run
    that loads it then says what to do)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = header(f)[0]
    except (OSError, ValueError):
        return None
    return shape[0] if len(shape) == 2 else None


@dataclass(frozen=True)
class Mixture:
    """A run's languages and how its training mixes them, read from the config alone.

    Analyses and reports ask this, not the raw config: which languages trained, the effective
    p of a schedule, each language's expected share of the training sequences, how each language
    is made from its text (transforms). A run of many languages (languages.corpora) has static
    shares by a `rule`; those of temperature sampling and UniMax depend on the corpora's sizes,
    known once the data is (`resolve`; a run records them in run.json as "shares").
    """

    names: tuple[str, ...]
    kind: str  # clone | real
    vocab: str  # "clone" for clones, else the real pair's disjoint | anchored | joint
    p: float  # the static total probability of the non-base languages (unused with a schedule)
    schedule: str  # e.g. "0.1_0.9", "" for a static mixture
    stages: tuple[float, ...]  # the schedule's per-stage p, () for a static mixture
    num_clones: int
    frac_clone: float
    rule: str = ""  # many languages: mix | uniform | temperature | unimax; "" for a pair or clones (p)
    shares: tuple[float, ...] = ()  # many languages: each one's share (() until `resolve` where sizes decide)
    temperature: float | None = None
    unimax_epochs: float | None = None
    transforms: tuple[tuple[str, ...], ...] = ()  # per language, in order (a clone run's others: ("clone",))

    @classmethod
    def of(cls, cfg: RunConfig) -> Mixture:
        lang = cfg.languages
        names = tuple(language_names(cfg))
        rows = _table_rows(lang.table) if lang.table else None
        if rows is not None and rows != len(names):  # (its ids are checked in full when a run loads it)
            raise XlingError(f"languages.table has {rows} rows but the run has {len(names)} languages "
                             f"(languages.num_clones + 1): give one row per language, or languages.num_clones {rows - 1}")
        rule, shares = "", ()
        if lang.corpora:
            rule = "mix" if lang.mix else "temperature" if lang.temperature else \
                "unimax" if lang.unimax_epochs else "uniform"
            if rule == "mix":
                given = [0.0] * len(names)
                for key, share in lang.mix.items():
                    given[language_index(cfg, key, "languages.mix")] += share
                if abs(sum(given) - 1.0) > 1e-6:  # after the names: a misspelt one is the first thing to fix
                    raise XlingError(f"languages.mix shares must sum to 1, got {sum(given):.6g}")
                shares = tuple(given)  # choose_by_shares normalises what rounding leaves
            elif rule == "uniform":
                shares = (1.0 / len(names),) * len(names)
        transforms = [() if i == 0 or lang.kind != "clone" else ("clone",) for i in range(len(names))]
        for key, steps in lang.transforms.items():
            i = language_index(cfg, key, "languages.transforms")
            if "clone" in steps and lang.kind != "clone":
                raise XlingError(f"languages.transforms.{key}: clone gives a clone run's language its own ids; a real "
                                 "language has them")
            if i == 0 and "clone" in steps:
                raise XlingError(f"languages.transforms.{key}: {names[0]} is the base language, whose ids are the "
                                 "tokenizer's: clone applies to the other languages")
            if i and lang.kind == "clone" and not steps:
                raise XlingError(f"languages.transforms.{key} is empty, so {key} would be {names[0]} itself (its ids "
                                 f"and its text): list clone for its own ids, or leave {key} out (a clone)")
            if not steps:  # (as a clone's empty list is refused, not read as a no-op)
                raise XlingError(f"languages.transforms.{key} is empty: it changes nothing; leave {key} out")
            transforms[i] = tuple(steps)
        return cls(names, lang.kind, "clone" if lang.kind == "clone" else lang.vocab, lang.p,
                   lang.schedule, tuple(parse_schedule(lang.schedule)) if lang.schedule else (),
                   lang.num_clones if lang.kind == "clone" else len(names) - 1, lang.frac_clone,
                   rule, shares, lang.temperature, lang.unimax_epochs, tuple(transforms))

    def resolve(self, sizes: list[int], budget: int) -> Mixture:
        """The mixture with its shares known: temperature and UniMax from each language's training tokens
        (`sizes`, one pass over its text) and the run's training tokens (`budget`)."""
        if self.rule == "temperature":
            return dataclasses.replace(self, shares=tuple(temperature_shares(sizes, self.temperature)))
        if self.rule == "unimax":
            return dataclasses.replace(self, shares=tuple(unimax_shares(sizes, budget, self.unimax_epochs)))
        return self

    @property
    def many(self) -> bool:
        """A run of many languages (languages.corpora), mixed by static shares instead of p."""
        return bool(self.rule)

    @property
    def effective_p(self) -> float:
        """The non-base share over the whole run: p, or the mean of a schedule's equal stages."""
        if self.many:
            return 1.0 - self.shares[0] if self.shares else math.nan
        return float(np.mean(self.stages)) if self.stages else self.p

    def expected_shares(self) -> list[float]:
        """Each language's expected share of the training sequences: 1 - p, then p / k per other language (many
        languages: their shares)."""
        if self.many:
            if not self.shares:
                raise XlingError(f"the shares of {self.rule} sampling depend on the corpora's sizes: resolve them "
                                 "(a trained run records them in run.json)")
            return list(self.shares)
        others = len(self.names) - 1
        p = self.effective_p
        return [1.0 - p] + [p / others] * others

    @property
    def trained(self) -> list[str]:
        """The languages the run trains on (a monolingual ladder run trains one)."""
        if self.many and not self.shares:  # temperature and UniMax give every language a share
            return list(self.names)
        return [name for name, share in zip(self.names, self.expected_shares()) if share > 0]

    @property
    def monolingual(self) -> bool:
        return len(self.trained) == 1

    @property
    def multilingual(self) -> bool:
        """More than one language trained: something to compare, align or transfer between."""
        return len(self.trained) > 1

    def word_order(self, lang: int) -> tuple[str, ...]:
        """The transforms that move a language's tokens (inverted, permuted), in order."""
        return tuple(t for t in self.transforms[lang] if t in WORD_ORDER) if self.transforms else ()

    def cloned(self, lang: int) -> bool:
        """Whether a language of a clone run has its own ids (its row of the id table) or the base language's."""
        return bool(self.transforms) and "clone" in self.transforms[lang]

    def law_language(self, lang: int) -> str:
        """Whose monolingual law a language is scored against: a clone's is the base language's, a real
        language's its own; with a changed word order, that of the base (or own) text in that word order."""
        name = self.names[0] if self.kind == "clone" else self.names[lang]
        order = self.word_order(lang)
        return f"{name} {'+'.join(order)}" if order else name
