"""Token efficiency (the paper's §4): MLPE, MLTE and TEff of a language against a monolingual law.

- MLPE_L = f(tokens_L / T): the perplexity a monolingual model gets from L's share of data;
- MLTE_L = f⁻¹(PPL_L): the monolingual data (as a fraction of T) needed to reach PPL_L;
- TEff_L = MLTE_L / (tokens_L / T): how much each token of L was worth, relative to
  monolingual training. Cloned languages use the English law. Which tokens_L a language is
  credited with is the caller's choice: study reports use the paper's accounting (the expected
  share, p/k of the run's tokens; a schedule's mean p) and show the sampled count beside it.

Intervals are 95 % percentile intervals over the law's bootstrap refits (`fit_scaling_law`) and, on
request, profile-likelihood intervals (`scaling_law.fraction_interval`), which take a short ladder's
few residual degrees of freedom into account.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.sources import csv_row
from ..errors import XlingError, a_kind
from ..fsio import atomic_write_text, make_dirs
from .scaling_law import (
    BELOW_ONE,
    E_AT_BOUND,
    FORMS,
    NUM_PARAMS,
    ScalingFit,
    ScalingLaw,
    fit_scaling_law,
    fraction_interval,
    ladder_means,
)

TABLE_COLUMNS = (
    "run", "language", "fraction", "ppl",
    "mlpe", "mlpe_lo", "mlpe_hi",
    "mlte", "mlte_lo", "mlte_hi",
    "teff", "teff_lo", "teff_hi",
    "mlte_profile_lo", "mlte_profile_hi", "teff_profile_lo", "teff_profile_hi",
    "warning",
)  # fmt: skip


@dataclass(frozen=True)
class Efficiency:
    """MLPE, MLTE (fraction of the budget) and TEff of one language in one run, with 95 % CIs.

    The bootstrap intervals are (nan, nan) when the fit has no bootstrap laws; the profile intervals
    need only a residual degree of freedom.
    """

    fraction: float
    ppl: float
    mlpe: float
    mlpe_ci: tuple[float, float]
    mlte: float
    mlte_ci: tuple[float, float]
    teff: float
    teff_ci: tuple[float, float]
    warnings: list[str] = field(default_factory=list)
    # the profile-likelihood intervals (`scaling_law.fraction_interval`), when asked for: better calibrated
    # than the bootstrap's in simulations of short ladders (README), ~30-50 ms each
    mlte_profile: tuple[float, float] | None = None
    teff_profile: tuple[float, float] | None = None


def _interval(values: Iterable[float]) -> tuple[float, float]:
    """95 % percentile interval; 'lower'/'higher' picks avoid inf - inf when some are inf."""
    v = np.asarray(list(values), dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    return (float(np.percentile(v, 2.5, method="lower")), float(np.percentile(v, 97.5, method="higher")))


def law_warnings(law: ScalingLaw) -> list[str]:
    """What limits every number read off this law, whatever the point."""
    out = []
    if law.n_points <= NUM_PARAMS:
        out.append(f"the law has {NUM_PARAMS} parameters and {law.n_points} ladder points: nothing is left to "
                   "estimate its noise from, so there is no interval; add monolingual fractions")
    elif law.n_points == NUM_PARAMS + 1:
        out.append(f"the law has {NUM_PARAMS} parameters and {law.n_points} ladder points: one residual degree of "
                   "freedom, so its intervals are wide and move with the last digits of the inputs; 5 or more points "
                   "make them stable")
    if law.exponent_at_bound:
        shape = ", 1/PPL linear in ln x" if law.form == "paper" and law.exponent_at_bound == "lower" else ""
        out.append(f"the law's exponent is at the {law.exponent_at_bound} bound of its range (a degenerate fit{shape}): "
                   "its parameters mean little one by one" + (", and a comparison with a published TEff is loose"
                                                                 if law.form == "paper" else ""))
    if law.asymptote_at_bound:
        out.append(f"the law's {E_AT_BOUND}, so what is read off it beyond the ladder's points is rough")
    return out


def _within(value: float, lo: float, hi: float, slack: float = 1e-9) -> bool:
    """lo <= value <= hi, up to rounding (a ladder point read back through its law lands 1e-16 beside it) or a
    relative `slack`."""
    return lo * (1 - slack) <= value <= hi * (1 + slack)


def _warnings(law: ScalingLaw, fraction: float, ppl: float, mlte: float) -> list[str]:
    out = law_warnings(law)
    lo_x, hi_x = law.x_range
    lo_p, hi_p = law.ppl_range
    # 2 %: a ladder point trains whole steps, so its fraction 0.1 is 0.1009 of a 55-step budget; a share of 0.1
    # beside it is no extrapolation worth a warning
    if not _within(fraction, lo_x, hi_x, slack=0.02):
        out.append(
            f"fraction {fraction:.4g} is outside the fitted range [{lo_x:.4g}, {hi_x:.4g}]: "
            "MLPE is extrapolated"
        )
    if math.isinf(mlte):
        out.append(
            f"PPL {ppl:.4g} is at or below the law's asymptote {law.asymptote:.4g}: unreachable "
            "with any amount of monolingual data, so MLTE and TEff are inf"
        )
    elif not _within(ppl, lo_p, hi_p):
        out.append(
            f"PPL {ppl:.4g} needs {mlte:.4g}x the budget, outside the monolingual points "
            f"(fractions [{lo_x:.4g}, {hi_x:.4g}], PPL [{lo_p:.4g}, {hi_p:.4g}]): MLTE is "
            "extrapolated; add monolingual runs that cover it"
        )
    elif not _within(mlte, lo_x, hi_x):  # more runs would not help: the law itself misses the ladder's end
        out.append(
            f"PPL {ppl:.4g} lies within the monolingual points' (PPL [{lo_p:.4g}, {hi_p:.4g}]) but the law reads "
            f"it at {mlte:.4g}x the budget, outside their fractions [{lo_x:.4g}, {hi_x:.4g}]: the law misses "
            "the ladder's end there"
        )
    return out


def _interval_warnings(fit: ScalingFit, mlte: float, mlte_ci: tuple[float, float]) -> list[str]:
    """A bootstrap interval that misses its own estimate describes the refits that succeeded, not the estimate."""
    lo, hi = mlte_ci
    if not (math.isfinite(mlte) and lo <= hi) or lo <= mlte <= hi:
        return []
    return [f"MLTE {mlte:.4g} lies outside its own bootstrap interval [{lo:.4g}, {hi:.4g}]: the refits that gave "
            "a law are not like the fit itself, so the interval does not describe it"
            + "".join(f" ({note})" for note in fit.notes[:1]) + "; prefer the profile-likelihood interval"]


def efficiency(fit: ScalingFit, fraction: float, ppl: float, profile: bool = False) -> Efficiency:
    """MLPE, MLTE and TEff of a language that got ``fraction`` of the budget and reached ``ppl``; with
    ``profile``, also their profile-likelihood intervals."""
    if not (fraction > 0 and math.isfinite(fraction) and ppl > 0 and math.isfinite(ppl)):
        raise XlingError(
            f"fraction ({fraction}) and PPL ({ppl}) must be finite and positive; fix the run data"
        )
    if ppl < 1:
        raise XlingError(f"PPL {ppl:g} is below 1, {BELOW_ONE}")
    law = fit.law
    mlpe = law.ppl(fraction)
    mlte = law.fraction_for(ppl)
    boot_mlte = [b.fraction_for(ppl) for b in fit.bootstrap_laws]
    mlte_ci = _interval(boot_mlte)
    mlte_profile = fraction_interval(fit, ppl) if profile else None
    return Efficiency(
        fraction=float(fraction),
        ppl=float(ppl),
        mlpe=mlpe,
        mlpe_ci=_interval(b.ppl(fraction) for b in fit.bootstrap_laws),
        mlte=mlte,
        mlte_ci=mlte_ci,
        teff=mlte / fraction,
        teff_ci=(mlte_ci[0] / fraction, mlte_ci[1] / fraction),
        warnings=_warnings(law, fraction, ppl, mlte) + _interval_warnings(fit, mlte, mlte_ci),
        mlte_profile=mlte_profile,
        teff_profile=(mlte_profile[0] / fraction, mlte_profile[1] / fraction) if mlte_profile else None,
    )


@functools.lru_cache(maxsize=64)
def _monotone_ladder(fractions: tuple[float, ...], ppls: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The ladder's distinct fractions and their mean ln PPL made non-increasing (isotonic regression):
    computed once per ladder, however many rows are read off it."""
    from scipy.optimize import isotonic_regression

    x, y = np.asarray(fractions), np.log(np.asarray(ppls))
    ok = np.isfinite(x) & (x > 0) & np.isfinite(y)
    xs = np.unique(x[ok])
    if len(xs) < 2:
        return xs, xs
    mean_y = np.array([y[ok][x[ok] == v].mean() for v in xs])
    return xs, -isotonic_regression(-mean_y).x


def ladder_mlte(fractions: Sequence[float], ppls: Sequence[float], ppl: float) -> float:
    """MLTE read off the monolingual ladder itself, with no law: the data fraction at which the ladder reaches
    ``ppl``, interpolated linearly in (ln PPL, ln x) between its points (repeated fractions averaged in ln PPL;
    a point that is worse than a smaller fraction's is made monotone by isotonic regression). NaN outside the
    ladder's perplexities: it never extrapolates. Beside the laws, it shows what a law's shape adds or hides
    (e.g. a late drop of the ladder that neither form follows)."""
    xs, falling = _monotone_ladder(tuple(map(float, fractions)), tuple(map(float, ppls)))
    if len(xs) < 2 or not (ppl > 0 and math.isfinite(ppl)):
        return math.nan
    target = math.log(ppl)
    if not (falling[-1] <= target <= falling[0]):
        return math.nan
    # np.interp needs increasing sample points: ln PPL reversed (flat stretches give their largest fraction)
    return float(np.exp(np.interp(target, falling[::-1], np.log(xs)[::-1])))


# ----------------------------------------------------------------------------- tables


def fit_languages(
    mono_rows: Sequence[dict],
    form: str = "loss",
    bootstrap: int = 1000,
    seed: int = 0,
    languages: Iterable[str] | None = None,
) -> dict[str, ScalingFit]:
    """One law per language of ``mono_rows`` (dicts with language, fraction, ppl).

    ``languages`` restricts the fits to those needed; every bootstrap uses ``seed``.
    """
    by_lang: dict[str, tuple[list[float], list[float]]] = {}
    for r in mono_rows:
        xs, ps = by_lang.setdefault(str(r["language"]), ([], []))
        xs.append(float(r["fraction"]))
        ps.append(float(r["ppl"]))
    wanted = by_lang if languages is None else [lang for lang in by_lang if lang in set(languages)]
    fits = {}
    for lang in wanted:
        try:
            fits[lang] = fit_scaling_law(*by_lang[lang], form=form, bootstrap=bootstrap, seed=seed)
        except XlingError as e:
            raise XlingError(f"language {lang!r}: {e}") from None
        _check_falls(lang, *fits[lang].points)  # (the points the fit checked)
    return fits


def _check_falls(lang: str, fractions: Sequence[float], ppls: Sequence[float]) -> None:
    """Refuse a ladder whose perplexity falls nowhere with more data (columns swapped, or the wrong runs): every law
    decreases, so its fit would be flat and every TEff 0 or inf. (A rise between some fractions is a note.)"""
    means = ladder_means(fractions, ppls)
    if len(means) >= 2 and all(b >= a for a, b in itertools.pairwise(means.values())):
        raise XlingError(f"language {lang!r}: the ladder's perplexity never falls with more data ("
                         + ", ".join(f"{p:g} at {f:g}" for f, p in means.items()) + "): a scaling law needs one that "
                         "does; check the fraction and ppl columns and the runs they come from")


def check_languages(mono_rows: Sequence[dict], run_rows: Sequence[dict]) -> None:
    available = sorted({str(r["language"]) for r in mono_rows})
    for r in run_rows:
        lang = str(r["language"])
        if lang not in available:
            raise XlingError(
                f"run {r['run']!r} has language {lang!r} but the monolingual data only has "
                f"{', '.join(available) or 'none'}; add monolingual runs for {lang!r} "
                "(clones use the base language's law: label them with its name)"
            )


def _spelt_as_mono(mono_rows: Sequence[dict], run_rows: Sequence[dict]) -> list[dict]:
    """Run rows whose language matches one monolingual language in another case (en1, EN1) take its
    spelling, as language names in configs match without regard to case."""
    names = {str(r["language"]) for r in mono_rows}
    by_lower: dict[str, list[str]] = {}
    for name in names:
        by_lower.setdefault(name.lower(), []).append(name)
    out = []
    for r in run_rows:
        lang, same = str(r["language"]), by_lower.get(str(r["language"]).lower(), [])
        out.append(dict(r, language=same[0]) if lang not in names and len(same) == 1 else r)
    return out


def teff_table(
    mono_rows: Sequence[dict],
    run_rows: Sequence[dict],
    form: str = "loss",
    bootstrap: int = 1000,
    seed: int = 0,
    fits: dict[str, ScalingFit] | None = None,
    profile: bool = True,
) -> list[dict]:
    """One row per run row: its MLPE, MLTE, TEff and intervals (the bootstrap's and, with `profile`, the
    profile likelihood's, ~30-50 ms a row), using its language's law.

    ``mono_rows``: dicts with language, fraction, ppl (one law is fitted per language).
    ``run_rows``: dicts with run, language, fraction, ppl. Pass ``fits`` (from
    ``fit_languages``) to reuse laws already fitted.
    """
    check_languages(mono_rows, run_rows)
    if fits is None:
        used = {str(r["language"]) for r in run_rows}
        fits = fit_languages(mono_rows, form=form, bootstrap=bootstrap, seed=seed, languages=used)
    out = []
    for r in run_rows:
        lang = str(r["language"])
        eff = efficiency(fits[lang], float(r["fraction"]), float(r["ppl"]), profile=profile)
        out.append(_row(str(r["run"]), lang, eff))
    return out


def _row(run: str, lang: str, e: Efficiency) -> dict:
    return {
        "run": run, "language": lang, "fraction": e.fraction, "ppl": e.ppl,
        "mlpe": e.mlpe, "mlpe_lo": e.mlpe_ci[0], "mlpe_hi": e.mlpe_ci[1],
        "mlte": e.mlte, "mlte_lo": e.mlte_ci[0], "mlte_hi": e.mlte_ci[1],
        "teff": e.teff, "teff_lo": e.teff_ci[0], "teff_hi": e.teff_ci[1],
        **({"mlte_profile_lo": e.mlte_profile[0], "mlte_profile_hi": e.mlte_profile[1],
            "teff_profile_lo": e.teff_profile[0], "teff_profile_hi": e.teff_profile[1]} if e.mlte_profile else {}),
        "warning": "; ".join(e.warnings),
    }  # fmt: skip


# ----------------------------------------------------------------------------- CSV I/O

NUMERIC_COLUMNS = ("fraction", "ppl")


def read_csv_rows(path: str | os.PathLike, required_columns: Sequence[str]) -> list[dict]:
    """Rows of a CSV as dicts; ``fraction`` and ``ppl`` become positive floats.

    Every problem is one XlingError naming the file (and line) and the fix.
    """
    p = Path(path)
    if not p.is_file():
        raise XlingError(f"{p}: {'a directory' if p.is_dir() else 'file not found'}; pass an existing CSV file")
    try:
        return _read_csv_rows(p, required_columns)
    except UnicodeDecodeError as exc:
        raise XlingError(f"{p} is not UTF-8 text (bad byte at offset {exc.start}): pass a CSV file") from None
    except csv.Error as exc:
        raise XlingError(f"{p} is not a readable CSV file ({exc}): pass a CSV file") from None


def _read_csv_rows(p: Path, required_columns: Sequence[str]) -> list[dict]:
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not header:
            raise XlingError(f"{p}: file is empty; it needs a header row with {', '.join(required_columns)}")
        reader.fieldnames = header
        missing = [c for c in required_columns if c not in header]
        if missing:
            raise XlingError(
                f"{p}: missing column(s) {', '.join(missing)}; the header must contain "
                f"{', '.join(required_columns)} (found {', '.join(header)})"
            )
        rows = []
        for raw in reader:
            if all(v is None or not str(v).strip() for v in raw.values()):
                continue  # blank line
            where = f"{p}:{reader.line_num}"
            rows.append(_parse_row(csv_row(raw, where), required_columns, where))
    if not rows:
        raise XlingError(f"{p}: no data rows; add one row per measurement below the header")
    return rows


def _parse_row(raw: dict, required_columns: Sequence[str], where: str) -> dict:
    row = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
    for col in required_columns:
        value = row.get(col)
        if value is None or value == "":
            raise XlingError(f"{where}: empty {col!r}; fill in every required column")
        if col in NUMERIC_COLUMNS:
            try:
                num = float(value)
            except ValueError:
                example = "24.7 (a perplexity, at least 1)" if col == "ppl" else "0.5"
                raise XlingError(f"{where}: {col} {value!r} is not a number; write e.g. {example}") from None
            if not (math.isfinite(num) and num > 0):
                raise XlingError(f"{where}: {col} must be a positive finite number, got {value!r}")
            if col == "ppl" and num < 1:
                raise XlingError(f"{where}: ppl {value!r} is below 1, {BELOW_ONE}")
            row[col] = num
    return row


def _csv_value(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_table(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write rows as CSV (TABLE_COLUMNS first), atomically: a temp file then os.replace.

    Missing intervals are written as empty cells, unbounded values as ``inf``.
    """
    p = Path(path)
    make_dirs(p.parent)
    columns = list(TABLE_COLUMNS) + [c for r in rows for c in r if c not in TABLE_COLUMNS]
    columns = list(dict.fromkeys(columns))
    buffer = io.StringIO(newline="")
    w = csv.writer(buffer, lineterminator="\n")  # (Unix line ends, as every other file xling writes)
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_value(r.get(c, "")) for c in columns])
    atomic_write_text(p, buffer.getvalue())
    return p


def check_rows(rows: Iterable[Mapping], required_columns: Sequence[str], what: str) -> list[dict]:
    """In-memory rows (mappings) checked as CSV rows are: every required key filled in, ``fraction`` and ``ppl``
    positive finite numbers. Every problem is one XlingError naming the row."""
    out = []
    for i, raw in enumerate(rows, 1):
        if not isinstance(raw, Mapping):
            raise XlingError(f"{what} row {i} is {a_kind(raw)}, not a mapping with "
                             f"{', '.join(required_columns)}")
        out.append(_parse_row(dict(raw), required_columns, f"{what} row {i}"))
    if not out:
        raise XlingError(f"{what}: no rows; give one mapping with {', '.join(required_columns)} per measurement")
    return out


def check_options(form: str, bootstrap: int) -> tuple[str, ...]:
    """The law forms to fit: `form` (loss or paper) or both."""
    if form != "both" and form not in FORMS:
        raise XlingError(f"unknown law form {form!r}: use {', '.join(FORMS)} or both")
    if bootstrap < 0:
        raise XlingError(f"bootstrap (--bootstrap) must be >= 0, got {bootstrap}")
    return FORMS if form == "both" else (form,)


def teff_rows(mono_rows: Sequence[dict], run_rows: Sequence[dict], form: str = "loss", bootstrap: int = 1000,
              seed: int = 0, profile: bool = True) -> tuple[list[dict], dict[tuple[str, str], ScalingFit]]:
    """Fit laws from ``mono_rows`` (language, fraction, ppl), score ``run_rows`` (run, language, fraction, ppl)
    under one law form or both (`form="both"`; every row then says its form). Rows as `check_rows` returns
    them; `profile`: with the profile-likelihood intervals. Returns the table's rows and the law of every
    (form, language) used."""
    forms = check_options(form, bootstrap)
    run_rows = _spelt_as_mono(mono_rows, run_rows)
    check_languages(mono_rows, run_rows)
    used = {str(r["language"]) for r in run_rows}
    rows, laws = [], {}
    for f in forms:
        fits = fit_languages(mono_rows, form=f, bootstrap=bootstrap, seed=seed, languages=used)
        laws.update({(f, lang): fit for lang, fit in fits.items()})
        rows += [{**row, "form": f} if len(forms) > 1 else row
                 for row in teff_table(mono_rows, run_rows, fits=fits, profile=profile)]
    return rows, laws


MONO_COLUMNS = ("language", "fraction", "ppl")
RUN_COLUMNS = ("run", "language", "fraction", "ppl")
