"""Statistics over seeds: means with 95 % t-intervals, geometric means for perplexities, Welch differences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stat:
    """Mean and 95 % t-interval over seeds (lo = hi = mean with one seed; nan when undefined).

    With log=True (perplexities) `values` are the logarithms, and mean/lo/hi the geometric mean
    and the exponentiated interval of ln(value): perplexities multiply, and one seed where a
    language blew up would otherwise give an interval reaching below zero.
    """

    mean: float
    lo: float
    hi: float
    n: int
    values: tuple[float, ...] = ()
    log: bool = False

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2


def t_stat(values) -> Stat:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = v.size
    if n == 0:
        return Stat(math.nan, math.nan, math.nan, 0)
    if not np.all(np.isfinite(v)):
        return Stat(math.inf, math.nan, math.nan, n, tuple(v))
    mean = float(v.mean())
    if n == 1:
        return Stat(mean, mean, mean, 1, tuple(v))
    from scipy import stats  # 0.4 s to import: loaded where an interval is computed, not by every command

    h = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return Stat(mean, mean - h, mean + h, n, tuple(v))


def log_stat(values) -> Stat:
    """Geometric mean and 95 % t-interval of ln(value), back on the value's scale (see Stat)."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    s = t_stat(np.log(np.asarray(v, dtype=float)))
    back = lambda x: math.exp(x) if math.isfinite(x) else x
    return Stat(back(s.mean), back(s.lo), back(s.hi), s.n, s.values, log=True)


def diff_interval(a: Stat, b: Stat) -> tuple[float, float, float]:
    """a - b with a Welch 95 % interval; (d, nan, nan) when a side has fewer than two seeds.

    For log stats the difference is of the logarithms: ln(a / b)."""
    if a.log != b.log:
        raise ValueError("cannot compare a log-scale Stat with a linear one")
    center = lambda s: math.log(s.mean) if s.log and s.mean > 0 else s.mean
    d = center(a) - center(b)
    if a.n == 0 or b.n == 0:
        return math.nan, math.nan, math.nan
    if a.n < 2 or b.n < 2 or not (math.isfinite(a.mean) and math.isfinite(b.mean)):
        return d, math.nan, math.nan
    va, vb = np.var(a.values, ddof=1) / a.n, np.var(b.values, ddof=1) / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    from scipy import stats

    h = float(stats.t.ppf(0.975, df) * se)
    return d, d - h, d + h


def fmt(x: float | None, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "inf"
    return format(x, ".3g" if spec.endswith("f") and abs(x) >= 1e9 else spec)  # (not 300 digits of a diverged run)


def fmt_stat(s: Stat, spec: str = ".2f") -> str:
    """mean ± half-width; a log stat (asymmetric interval) as mean [lo, hi]."""
    if s.n == 0:
        return "–"
    if s.n == 1 or math.isnan(s.lo):
        return fmt(s.mean, spec)
    if s.log:
        return fmt_interval(s, spec)
    return f"{fmt(s.mean, spec)} ± {fmt(s.half, spec)}"


def fmt_interval(s: Stat, spec: str = ".2f") -> str:
    if s.n < 2 or math.isnan(s.lo):
        return fmt(s.mean, spec) + (" (one seed)" if s.n == 1 else "")
    return f"{fmt(s.mean, spec)} [{fmt(s.lo, spec)}, {fmt(s.hi, spec)}]"
