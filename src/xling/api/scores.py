"""`xling.teff`: token efficiency from perplexities, and tables as lists of dicts or DataFrames."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import XlingError, a_kind
from .checks import check_arguments

Rows = Iterable[Mapping[str, Any]]


def as_frame(rows: list[dict], columns: list[str] | None = None) -> Any:
    """Rows as a pandas DataFrame (one column per key), for `frame=True`; no rows: the `columns` given, empty."""
    try:
        import pandas
    except ImportError:
        raise XlingError("frame=True needs pandas (pip install pandas); without it the rows are a list of dicts") from None
    return pandas.DataFrame(rows, columns=None if rows else columns)


def rows_or_frame(rows: list[dict], frame: bool, columns: list[str] | None = None) -> Any:
    return as_frame(rows, columns) if frame else rows


class TEffTable(list):
    """The rows `teff` returns: a list of dicts, one per run row (and law form), plus the laws.

    Each row has run, language, fraction, ppl and, with 95 % intervals from the law's bootstrap
    (``_lo``, ``_hi``), mlpe (the perplexity a monolingual model gets from that share of data), mlte
    (the share of monolingual data that reaches the run's perplexity) and teff = mlte / fraction;
    with ``profile``, the profile-likelihood intervals mlte_profile_lo/hi and teff_profile_lo/hi;
    then a warning (e.g. a fraction outside the ladder) and, with ``form="both"``, the form.
    """

    laws: dict
    """The fitted law of every (form, language) used, keyed by the tuple (form, language), e.g. ("loss", "EN1"):
    a ScalingFit with ``.law`` (its ``form``, ``param_dict``, ``n_points``) and ``.notes``."""

    def __init__(self, rows: Iterable[dict] = (), laws: dict | None = None) -> None:
        super().__init__(rows)
        self.laws = dict(laws or {})

    def frame(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        return as_frame(list(self))

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (the columns `xling teff` writes), atomically; returns the path."""
        from ..analysis.efficiency import write_table

        return write_table(self, path)


def _rows(source: Rows | str | os.PathLike, columns: tuple[str, ...], what: str) -> list[dict]:
    """Rows from a CSV file, a DataFrame or an iterable of mappings, checked."""
    from ..analysis.efficiency import check_rows, read_csv_rows

    if isinstance(source, (str, os.PathLike)):
        return read_csv_rows(source, columns)
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a pandas DataFrame
        source = source.to_dict("records")
    if isinstance(source, Mapping):  # one row
        source = [source]
    if not isinstance(source, Iterable):
        raise XlingError(f"{what} rows must be mappings (a list of dicts), a DataFrame or a CSV file's path; "
                         f"got {a_kind(source)}")
    return check_rows(source, columns, what)


def teff(mono_rows: Rows | str | os.PathLike, run_rows: Rows | str | os.PathLike, form: str = "loss",
         bootstrap: int = 1000, seed: int = 0, profile: bool = True) -> TEffTable:
    """MLPE, MLTE and token efficiency (TEff) of runs, from perplexities you measured (the paper's §4).

    `mono_rows`: monolingual runs, one mapping per run with ``language``, ``fraction`` (the share of the
    data budget it trained on) and ``ppl`` (its test perplexity); at least 3 distinct fractions per
    language. A law is fitted per language. `run_rows`: the runs to score, with ``run``, ``language``,
    ``fraction`` (the share of the budget that language got in the run) and ``ppl``. Clones are scored
    against the base language's law: give their rows the base language's name. Either may also be a
    CSV file with those columns or a pandas DataFrame.

    `form`: ``"loss"`` fits ln PPL = E + A·x^(−α), ``"paper"`` the authors' 1/PPL = c − a·x^(−b),
    ``"both"`` scores every row under each. `bootstrap` resamples give the 95 % percentile intervals (0:
    none); `profile` adds the profile-likelihood intervals of MLTE and TEff (~30-50 ms a row; in
    simulations of short ladders the better calibrated of the two, README).

        ladder = [(0.05, 430), (0.1, 265), (0.25, 130), (0.5, 85), (1, 61)]  # EN1 alone on a share of the data
        mono = [{"language": "EN1", "fraction": f, "ppl": p} for f, p in ladder]
        # EN2, a clone of English, with 10 % of the data beside EN1: scored with English's law
        table = xling.teff(mono, [{"run": "EN2 at 10%", "language": "EN1", "fraction": 0.1, "ppl": 128}])
        table[0]["teff"], table[0]["teff_lo"], table[0]["teff_profile_lo"]   # 2.65, 2.45, 2.13

    Three fractions leave nothing to estimate the law's noise from (three parameters; the law passes through
    them unless a parameter is held at its bound): no interval (nan) and a warning; use
    at least 4, better 5 or more, spanning the fractions you score (scoring outside them extrapolates).

    `xling teff --mono MONO.csv --runs RUNS.csv` prints this table and writes it as CSV.
    """
    from ..analysis.efficiency import MONO_COLUMNS, RUN_COLUMNS, check_options, teff_rows

    check_arguments(form=(form, str), bootstrap=(bootstrap, int, 0, 10**7), seed=(seed, int, 0, 2**32 - 1),
                    profile=(profile, bool))
    check_options(form, bootstrap)
    rows, laws = teff_rows(_rows(mono_rows, MONO_COLUMNS, "mono"), _rows(run_rows, RUN_COLUMNS, "runs"),
                           form, bootstrap, seed, profile)
    return TEffTable(rows, laws)
