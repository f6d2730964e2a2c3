"""How a claim is judged: a `Status`, and a `Check` that carries one statistical check as data.

A test's status comes from the 95 % interval of its effect: "supported" when the interval
excludes no effect in the paper's direction, "direction holds, not significant" when only the
mean agrees, and so on. Every place that judges (study claims, alignment comparisons) builds
`Check`s here; words are made from them, never read back from words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from .stats import Stat, diff_interval


class Status(str, Enum):
    SUPPORTED = "supported"
    HOLDS = "direction holds, not significant"
    HOLDS_ONE_SEED = "direction holds (one seed, no interval)"
    NOT_SUPPORTED_ONE_SEED = "not supported (one seed)"
    NOT_SUPPORTED = "not supported"
    CONTRADICTED = "contradicted"
    PARTLY = "partly"
    MIXED = "mixed: checks significant both ways"
    NOT_TESTED = "not tested"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def holds(self) -> bool:
        """The means point the paper's way (significantly or not)."""
        return self in (Status.SUPPORTED, Status.HOLDS, Status.HOLDS_ONE_SEED)


@dataclass(frozen=True)
class Check:
    """One check: its status, the effect (a difference, or a value minus 1; for perplexities a
    log-ratio) and the effect's 95 % interval ((nan, nan) with one seed)."""

    status: Status
    effect: float = math.nan
    interval: tuple[float, float] = (math.nan, math.nan)

    def with_status(self, status: Status) -> Check:
        return Check(status, self.effect, self.interval)

    def answer(self) -> str:
        """The check in words, for "is A higher than B?": 'yes (Δ = +0.021, 95 % CI [...])'."""
        d, (lo, hi) = self.effect, self.interval
        if self.status is Status.NOT_TESTED:
            return "not tested"
        if math.isnan(lo):
            return f"{'yes' if d > 0 else 'no'} in one seed (Δ = {d:+.3f}; no interval)"
        word = {Status.SUPPORTED: "yes", Status.CONTRADICTED: "no"}.get(self.status, "not significant")
        return f"{word} (Δ = {d:+.3f}, 95 % CI [{lo:+.3f}, {hi:+.3f}])"


NOT_TESTED = Check(Status.NOT_TESTED)


def _judge(holds: bool, lo: float, hi: float) -> Status:
    """Status of an effect whose sign-adjusted interval is [lo, hi] (positive: the paper's way)."""
    if math.isnan(lo):
        return Status.HOLDS_ONE_SEED if holds else Status.NOT_SUPPORTED_ONE_SEED
    if lo > 0:
        return Status.SUPPORTED
    if holds:
        return Status.HOLDS
    return Status.CONTRADICTED if hi < 0 else Status.NOT_SUPPORTED


def vs_one(s: Stat, above: bool = True) -> Check:
    """Is the value above 1 (or below 1 with above=False), judged by its seed interval?"""
    return vs_value(s, 1.0, above)


def vs_value(s: Stat, ref: float, above: bool = True) -> Check:
    """Is the value above `ref` (or below with above=False), judged by its seed interval? The effect is value - ref."""
    if s.n == 0:
        return NOT_TESTED  # no monolingual ladder, so no TEff
    sign = 1 if above else -1
    lo, hi = sorted((sign * (s.lo - ref), sign * (s.hi - ref))) if s.n >= 2 else (math.nan, math.nan)
    interval = (s.lo - ref, s.hi - ref) if s.n >= 2 else (math.nan, math.nan)
    return Check(_judge(sign * (s.mean - ref) > 0, lo, hi), s.mean - ref, interval)


def compare(a: Stat, b: Stat, smaller: bool = False) -> Check:
    """Is a < b (smaller=True) or a > b, judged by the Welch interval of a - b?"""
    d, lo, hi = diff_interval(a, b)
    if math.isnan(d):
        return NOT_TESTED
    sign = -1 if smaller else 1
    adjusted = sorted((sign * lo, sign * hi)) if not math.isnan(lo) else (math.nan, math.nan)
    return Check(_judge(sign * d > 0, *adjusted), d, (lo, hi))


_ONE_SEED = (Status.HOLDS_ONE_SEED, Status.NOT_SUPPORTED_ONE_SEED)

# What each verdict word means, for the reports (the rules are `_judge` and `combine`).
MEANINGS = (
    "'supported': the 95 % interval of the effect excludes no effect, in the paper's direction; "
    "'direction holds, not significant': the means point the paper's way, the interval includes no effect; "
    "'not supported': the means do not point the paper's way, the interval includes no effect (a claim of several "
    "checks: none supported and not every one pointing the paper's way, unless every one is contradicted); "
    "'contradicted': the interval excludes no effect, in the opposite direction; "
    "'(one seed)': one seed, so no interval, only the direction of the means; "
    "'partly': a claim of several checks of which at least one is supported and at least one is not, none "
    "contradicted; 'mixed: checks significant both ways': at least one supported and at least one contradicted; "
    "'not tested': the study lacks the runs (or the monolingual ladder) a check needs. "
    "A check's own line answers its question 'yes' or 'no' where the interval excludes no effect, "
    "'not significant' where it does not, and 'yes/no in one seed' (the sign only) without an interval. "
    "No correction is made for the number of checks: with k checks of no true effect, one is "
    "significant in the paper's direction by chance about 1 − 0.975^k of the time."
)


def combine(statuses: list[Status]) -> Status:
    """One status for several checks: the common one; else "mixed" when some part is supported
    (significant in the paper's direction) and another contradicted (significant against it); else
    "partly" when some part is supported; else "direction holds" when every check points the
    paper's way; else "not supported" (the one-seed forms where every check has one seed). A check
    that only points the paper's way, beside others that do not or that go significantly against it,
    does not make a claim partly supported. No correction for the number of checks: with k null
    checks, one lands significant in the paper's direction about 1 - 0.975^k of the time."""
    statuses = [s for s in statuses if s is not Status.NOT_TESTED]
    if not statuses:
        return Status.NOT_TESTED
    if all(s is statuses[0] for s in statuses):
        return statuses[0]
    some_supported = any(s in (Status.SUPPORTED, Status.PARTLY, Status.MIXED) for s in statuses)
    if Status.MIXED in statuses or (some_supported and Status.CONTRADICTED in statuses):
        return Status.MIXED
    if some_supported:
        return Status.PARTLY
    if all(s.holds for s in statuses):
        return Status.HOLDS_ONE_SEED if all(s in _ONE_SEED for s in statuses) else Status.HOLDS
    return Status.NOT_SUPPORTED_ONE_SEED if all(s in _ONE_SEED for s in statuses) else Status.NOT_SUPPORTED


def combine_checks(first: Check, second: Check) -> Check:
    """Both checks in one: the first's effect, the status both together have (`combine`)."""
    return first.with_status(combine([first.status, second.status]))


NOT_COUNTED = "shown beside, not counted in the verdict"


@dataclass(frozen=True)
class Evidence:
    """A line of the alignment report for one claim, with its check (None: shown, not judged)."""

    claim: str
    line: str
    test: Check | None = None

    @property
    def told(self) -> str:
        """The line as a verdict lists it: one without a check says that it does not count."""
        if self.test:
            return self.line
        return f"{self.line.rstrip('.')} ({NOT_COUNTED})"
