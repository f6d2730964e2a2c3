"""Token efficiency: monolingual scaling laws, MLPE, MLTE and TEff (paper §4).

A *monolingual scaling law* maps the fraction x of the reference token budget T that a
monolingual model was trained on to its test perplexity. From it:

- MLPE_L = f(tokens_L / T): the perplexity a monolingual model gets from L's share of data;
- MLTE_L = f⁻¹(PPL_L): the monolingual data (as a fraction of T) needed to reach PPL_L;
- TEff_L = MLTE_L / (tokens_L / T): how much each token of L was worth, relative to
  monolingual training. Cloned languages use the English law; each of k clones at total
  clone probability p gets p/k of the tokens; schedules use their actual token counts.

Functional form and fitting space
---------------------------------
Default (``form="loss"``): the standard data-scaling law for cross-entropy,

    L(x) = E + A · x^(-alpha),    L = ln PPL,   E ≥ 0, A > 0, alpha > 0,

fitted by nonlinear least squares on L (log-perplexity). Why: this is the form used in the
scaling-law literature (Kaplan et al. 2020; Hoffmann et al. 2022), E is an interpretable
irreducible loss, and noise across seeds is roughly multiplicative in PPL, i.e. additive
and homoscedastic in ln PPL, which is what least squares assumes.

Alternative (``form="paper"``): the authors' ``1/PPL = c - a · x^(-b)`` (a, b, c > 0),
fitted in 1/PPL space as they did, so results can be compared with theirs.

Both are the same three-parameter power law ``z = E + A · x^(-alpha)`` in a transformed
space z (z = ln PPL, or z = -1/PPL with E = -c), so one fitting routine serves both. The
fit starts from a grid over E (for fixed E the law is linear in log-log space, which gives
A and alpha in closed form) and is refined with ``scipy.optimize.least_squares`` under
bounds. Three distinct fractions are needed; with exactly three points the law passes
through them (zero residual, so no uncertainty can be estimated from the data).

Both laws have an asymptote: the perplexity of infinitely much monolingual data
(exp(E), resp. 1/c). A perplexity at or below it is unreachable by monolingual training:
MLTE and TEff are then ``inf`` and a warning says so.

Uncertainty comes from a residual bootstrap (see ``fit_scaling_law``); intervals are 95 %
percentile intervals over the bootstrap laws.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from .errors import XlingError
from .fsio import atomic_write_text

FORMS = ("loss", "paper")
NUM_PARAMS = 3
MIN_FRACTIONS = 3
TABLE_COLUMNS = (
    "run", "language", "fraction", "ppl",
    "mlpe", "mlpe_lo", "mlpe_hi",
    "mlte", "mlte_lo", "mlte_hi",
    "teff", "teff_lo", "teff_hi",
    "warning",
)  # fmt: skip


# ----------------------------------------------------------------------------- the law


@dataclass(frozen=True)
class ScalingLaw:
    """A fitted monolingual law PPL = f(x), x = training tokens / reference budget.

    ``params`` are (E, A, alpha) for ``form="loss"`` and (a, b, c) for ``form="paper"``;
    ``param_dict`` names them. ``x_range`` and ``ppl_range`` are what the monolingual points
    covered (outside them the law extrapolates); ``residual_rms`` is in the fitting space
    (ln PPL, resp. 1/PPL).
    """

    form: str
    params: tuple[float, float, float]
    x_range: tuple[float, float]
    ppl_range: tuple[float, float]
    n_points: int
    residual_rms: float

    @property
    def param_dict(self) -> dict[str, float]:
        names = ("E", "A", "alpha") if self.form == "loss" else ("a", "b", "c")
        return dict(zip(names, self.params))

    @property
    def asymptote(self) -> float:
        """The PPL that infinitely much monolingual data would reach (exp(E), resp. 1/c)."""
        return float(_z_to_ppl(self.form, np.asarray(self._z_params()[0])))

    def _z_params(self) -> tuple[float, float, float]:
        """(E, A, alpha) of the law in its fitting space z (see the module docstring)."""
        if self.form == "loss":
            return self.params
        a, b, c = self.params
        return (-c, a, b)

    def ppl(self, x):
        """Predicted perplexity at data fraction(s) x (vectorised; float for a scalar).

        The paper form predicts 1/PPL ≤ 0 for very small x; the PPL is then ``inf``.
        """
        e, a, alpha = self._z_params()
        z = e + a * np.asarray(x, dtype=float) ** (-alpha)
        return _scalar_or_array(_z_to_ppl(self.form, z))

    def fraction_for(self, ppl):
        """The data fraction at which the law reaches perplexity ``ppl`` (the inverse of ``ppl``).

        Returns ``inf`` where ``ppl`` ≤ the asymptote: no amount of monolingual data gets
        there, so the equivalent token count is unbounded. Vectorised like ``ppl``.
        """
        e, a, alpha = self._z_params()
        gap = _ppl_to_z(self.form, np.asarray(ppl, dtype=float)) - e
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(gap > 0, (a / np.where(gap > 0, gap, 1.0)) ** (1.0 / alpha), np.inf)
        return _scalar_or_array(x)


@dataclass(frozen=True)
class ScalingFit:
    """A point law plus the laws refitted on bootstrap resamples (empty when not estimable)."""

    law: ScalingLaw
    bootstrap_laws: tuple[ScalingLaw, ...] = ()
    notes: tuple[str, ...] = ()  # e.g. why there is no interval


def _ppl_to_z(form: str, ppl: np.ndarray) -> np.ndarray:
    return np.log(ppl) if form == "loss" else -1.0 / ppl


def _z_to_ppl(form: str, z: np.ndarray) -> np.ndarray:
    if form == "loss":
        return np.exp(z)
    with np.errstate(divide="ignore"):
        return np.where(z < 0, -1.0 / np.where(z < 0, z, -1.0), np.inf)


def _scalar_or_array(a: np.ndarray):
    return float(a) if np.ndim(a) == 0 else a


# ----------------------------------------------------------------------------- fitting


def _initial_guess(x: np.ndarray, z: np.ndarray, e_bounds: tuple[float, float]) -> np.ndarray:
    """Best (E, ln A, alpha) over a grid of E: for fixed E, ln(z - E) is linear in ln x.

    This avoids the local minima a single hand-picked start can fall into.
    """
    zmin, span = z.min(), max(np.ptp(z), 1e-12)
    e_grid = zmin - span * np.geomspace(1e-3, 1e2, 60)
    e_grid = e_grid[(e_grid >= e_bounds[0]) & (e_grid <= e_bounds[1])]
    if e_grid.size == 0:
        e_grid = np.array([e_bounds[0] if np.isfinite(e_bounds[0]) else zmin - span])
    lx = np.log(x)
    lz = np.log(np.clip(z[None, :] - e_grid[:, None], 1e-300, None))
    lx_c = lx - lx.mean()
    slope = (lz - lz.mean(axis=1, keepdims=True)) @ lx_c / max(lx_c @ lx_c, 1e-300)
    intercept = lz.mean(axis=1) - slope * lx.mean()
    alpha = np.clip(-slope, 1e-3, 10.0)
    pred = e_grid[:, None] + np.exp(intercept[:, None]) * x[None, :] ** (-alpha[:, None])
    best = int(np.argmin(((z[None, :] - pred) ** 2).sum(axis=1)))
    return np.array([e_grid[best], intercept[best], alpha[best]])


def _fit_z(x: np.ndarray, z: np.ndarray, form: str) -> np.ndarray:
    """Least-squares (E, A, alpha) of z = E + A·x^(-alpha) under the form's bounds."""
    # loss: E = irreducible loss ≥ 0; paper: E = -c ≤ 0 (c > 0).
    e_bounds = (0.0, np.inf) if form == "loss" else (-np.inf, 0.0)
    lower = [e_bounds[0], -np.inf, 1e-6]
    upper = [e_bounds[1], np.inf, 10.0]
    theta0 = np.clip(_initial_guess(x, z, e_bounds), np.add(lower, 1e-9), np.subtract(upper, 1e-9))

    def residuals(theta):
        e, log_a, alpha = theta
        return e + np.exp(log_a) * x ** (-alpha) - z

    def jacobian(theta):
        _, log_a, alpha = theta
        power = np.exp(log_a) * x ** (-alpha)
        return np.column_stack([np.ones_like(x), power, -power * np.log(x)])

    sol = least_squares(
        residuals, theta0, jac=jacobian, bounds=(lower, upper), x_scale="jac",
        ftol=1e-12, xtol=1e-12, gtol=1e-12,
    )  # fmt: skip
    e, log_a, alpha = sol.x
    return np.array([e, math.exp(log_a), alpha])


def _make_law(form, zparams, x, ppl, z) -> ScalingLaw:
    e, a, alpha = (float(v) for v in zparams)
    rms = float(np.sqrt(np.mean((e + a * x ** (-alpha) - z) ** 2)))
    params = (e, a, alpha) if form == "loss" else (a, alpha, -e)
    return ScalingLaw(
        form=form,
        params=params,
        x_range=(float(x.min()), float(x.max())),
        ppl_range=(float(ppl.min()), float(ppl.max())),
        n_points=int(x.size),
        residual_rms=rms,
    )


def _check_points(fractions, ppls, form: str) -> tuple[np.ndarray, np.ndarray]:
    if form not in FORMS:
        raise XlingError(f"unknown scaling-law form {form!r}; use one of: {', '.join(FORMS)}")
    x = np.asarray(fractions, dtype=float).ravel()
    ppl = np.asarray(ppls, dtype=float).ravel()
    if x.size != ppl.size:
        raise XlingError(f"got {x.size} fractions but {ppl.size} perplexities; give one PPL per run")
    if not (np.all(np.isfinite(x)) and np.all(x > 0) and np.all(np.isfinite(ppl)) and np.all(ppl > 0)):
        raise XlingError("fractions and perplexities must be finite and positive; fix the monolingual data")
    distinct = np.unique(x).size
    if distinct < MIN_FRACTIONS:
        raise XlingError(
            f"a scaling law needs monolingual runs at >= {MIN_FRACTIONS} distinct data fractions, "
            f"got {distinct}; train monolingual models at more fractions (e.g. 0.1, 0.5, 1.0)"
        )
    return x, ppl


def fit_scaling_law(
    fractions: Sequence[float],
    ppls: Sequence[float],
    form: str = "loss",
    bootstrap: int = 1000,
    seed: int = 0,
) -> ScalingFit:
    """Fit a monolingual law to (fraction, PPL) points; repeated fractions (seeds) are all used.

    Uncertainty: a *residual* bootstrap. Scaling ladders have few distinct fractions, so
    resampling cases often draws < 3 distinct fractions (an unidentifiable law) or drops the
    extreme fractions that pin down E and alpha. Resampling residuals keeps the design fixed
    and only perturbs the responses, which stays stable with 4-10 points. Residuals are
    centred and inflated by sqrt(n / (n - 3)) to undo the shrinkage of a 3-parameter fit.
    With n = 3 points the residuals are all zero: no interval can be estimated, and
    ``notes`` says so. Bootstrap refits that fail are dropped.
    """
    x, ppl = _check_points(fractions, ppls, form)
    z = _ppl_to_z(form, ppl)
    zparams = _fit_z(x, z, form)
    law = _make_law(form, zparams, x, ppl, z)
    if bootstrap <= 0:
        return ScalingFit(law, (), ("bootstrap disabled: no intervals",))
    dof = x.size - NUM_PARAMS
    if dof <= 0:
        note = (
            f"no interval: {x.size} points for {NUM_PARAMS} parameters leave no residual to "
            "resample; add fractions or seeds"
        )
        return ScalingFit(law, (), (note,))
    e, a, alpha = zparams
    fitted = e + a * x ** (-alpha)
    resid = (z - fitted) - (z - fitted).mean()
    resid *= math.sqrt(x.size / dof)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(bootstrap):
        z_star = fitted + rng.choice(resid, size=resid.size, replace=True)
        ppl_star = _z_to_ppl(form, z_star)
        if not np.all(np.isfinite(ppl_star)):
            continue  # paper form: 1/PPL pushed past 0; not a valid resample
        try:
            boot.append(_make_law(form, _fit_z(x, z_star, form), x, ppl, z_star))
        except (ValueError, FloatingPointError):  # pragma: no cover - numerical failure
            continue
    notes = ()
    if len(boot) < 0.9 * bootstrap:
        notes = (f"only {len(boot)} of {bootstrap} bootstrap refits succeeded; intervals are rough",)
    return ScalingFit(law, tuple(boot), notes)


# ----------------------------------------------------------------------------- efficiency


@dataclass(frozen=True)
class Efficiency:
    """MLPE, MLTE (fraction of the budget) and TEff of one language in one run, with 95 % CIs.

    Intervals are (nan, nan) when the fit has no bootstrap laws.
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


def _interval(values: Iterable[float]) -> tuple[float, float]:
    """95 % percentile interval; 'lower'/'higher' picks avoid inf - inf when some are inf."""
    v = np.asarray(list(values), dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    return (float(np.percentile(v, 2.5, method="lower")), float(np.percentile(v, 97.5, method="higher")))


def _warnings(law: ScalingLaw, fraction: float, ppl: float, mlte: float) -> list[str]:
    out = []
    lo_x, hi_x = law.x_range
    lo_p, hi_p = law.ppl_range
    if not lo_x <= fraction <= hi_x:
        out.append(
            f"fraction {fraction:.4g} is outside the fitted range [{lo_x:.4g}, {hi_x:.4g}]: "
            "MLPE is extrapolated"
        )
    if math.isinf(mlte):
        out.append(
            f"PPL {ppl:.4g} is at or below the law's asymptote {law.asymptote:.4g}: unreachable "
            "with any amount of monolingual data, so MLTE and TEff are inf"
        )
    elif not (lo_p <= ppl <= hi_p and lo_x <= mlte <= hi_x):
        out.append(
            f"PPL {ppl:.4g} needs {mlte:.4g}x the budget, outside the monolingual points "
            f"(fractions [{lo_x:.4g}, {hi_x:.4g}], PPL [{lo_p:.4g}, {hi_p:.4g}]): MLTE is "
            "extrapolated; add monolingual runs that cover it"
        )
    return out


def efficiency(fit: ScalingFit, fraction: float, ppl: float) -> Efficiency:
    """MLPE, MLTE and TEff of a language that got ``fraction`` of the budget and reached ``ppl``."""
    if not (fraction > 0 and math.isfinite(fraction) and ppl > 0 and math.isfinite(ppl)):
        raise XlingError(
            f"fraction ({fraction}) and PPL ({ppl}) must be finite and positive; fix the run data"
        )
    law = fit.law
    mlpe = law.ppl(fraction)
    mlte = law.fraction_for(ppl)
    boot_mlte = [b.fraction_for(ppl) for b in fit.bootstrap_laws]
    mlte_ci = _interval(boot_mlte)
    return Efficiency(
        fraction=float(fraction),
        ppl=float(ppl),
        mlpe=mlpe,
        mlpe_ci=_interval(b.ppl(fraction) for b in fit.bootstrap_laws),
        mlte=mlte,
        mlte_ci=mlte_ci,
        teff=mlte / fraction,
        teff_ci=(mlte_ci[0] / fraction, mlte_ci[1] / fraction),
        warnings=_warnings(law, fraction, ppl, mlte),
    )


def clone_fractions(p: float, num_clones: int, total_fraction: float) -> list[float]:
    """Budget fractions of [base, clone_1, ..., clone_k]: (1-p)·total, then p/k·total each.

    This is the paper's accounting (tokens_EN2 = N·p/k): each clone is credited with its
    expected share, not a sampled count.
    """
    if not 0.0 <= p <= 1.0:
        raise XlingError(f"clone probability p must be in [0, 1], got {p}; fix languages.p")
    if num_clones < 1:
        raise XlingError(f"num_clones must be >= 1, got {num_clones}; fix languages.num_clones")
    if not total_fraction > 0:
        raise XlingError(f"total_fraction must be > 0, got {total_fraction}")
    return [(1.0 - p) * total_fraction] + [p / num_clones * total_fraction] * num_clones


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
    return fits


def _check_languages(mono_rows: Sequence[dict], run_rows: Sequence[dict]) -> None:
    available = sorted({str(r["language"]) for r in mono_rows})
    for r in run_rows:
        lang = str(r["language"])
        if lang not in available:
            raise XlingError(
                f"run {r['run']!r} has language {lang!r} but the monolingual data only has "
                f"{', '.join(available) or 'none'}; add monolingual runs for {lang!r} "
                "(clones use the base language's law: label them with its name)"
            )


def teff_table(
    mono_rows: Sequence[dict],
    run_rows: Sequence[dict],
    form: str = "loss",
    bootstrap: int = 1000,
    seed: int = 0,
    fits: dict[str, ScalingFit] | None = None,
) -> list[dict]:
    """One row per run row: its MLPE, MLTE, TEff and intervals, using its language's law.

    ``mono_rows``: dicts with language, fraction, ppl (one law is fitted per language).
    ``run_rows``: dicts with run, language, fraction, ppl. Pass ``fits`` (from
    ``fit_languages``) to reuse laws already fitted.
    """
    _check_languages(mono_rows, run_rows)
    if fits is None:
        used = {str(r["language"]) for r in run_rows}
        fits = fit_languages(mono_rows, form=form, bootstrap=bootstrap, seed=seed, languages=used)
    out = []
    for r in run_rows:
        lang = str(r["language"])
        eff = efficiency(fits[lang], float(r["fraction"]), float(r["ppl"]))
        out.append(_row(str(r["run"]), lang, eff))
    return out


def _row(run: str, lang: str, e: Efficiency) -> dict:
    return {
        "run": run, "language": lang, "fraction": e.fraction, "ppl": e.ppl,
        "mlpe": e.mlpe, "mlpe_lo": e.mlpe_ci[0], "mlpe_hi": e.mlpe_ci[1],
        "mlte": e.mlte, "mlte_lo": e.mlte_ci[0], "mlte_hi": e.mlte_ci[1],
        "teff": e.teff, "teff_lo": e.teff_ci[0], "teff_hi": e.teff_ci[1],
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
        raise XlingError(f"{p}: file not found; pass an existing CSV file")
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
            rows.append(_parse_row(raw, required_columns, f"{p}:{reader.line_num}"))
    if not rows:
        raise XlingError(f"{p}: no data rows; add one row per measurement below the header")
    return rows


def _parse_row(raw: dict, required_columns: Sequence[str], where: str) -> dict:
    row = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k is not None}
    for col in required_columns:
        value = row.get(col)
        if value is None or value == "":
            raise XlingError(f"{where}: empty {col!r}; fill in every required column")
        if col in NUMERIC_COLUMNS:
            try:
                num = float(value)
            except ValueError:
                raise XlingError(f"{where}: {col} {value!r} is not a number; write e.g. 0.5") from None
            if not (math.isfinite(num) and num > 0):
                raise XlingError(f"{where}: {col} must be a positive finite number, got {value!r}")
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
    p.parent.mkdir(parents=True, exist_ok=True)
    columns = list(TABLE_COLUMNS) + [c for r in rows for c in r if c not in TABLE_COLUMNS]
    columns = list(dict.fromkeys(columns))
    buffer = io.StringIO(newline="")
    w = csv.writer(buffer)
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_value(r.get(c, "")) for c in columns])
    atomic_write_text(p, buffer.getvalue())
    return p


def _fmt(v: float, spec: str) -> str:
    if math.isnan(v):
        return "-"
    return "inf" if math.isinf(v) else format(v, spec)


def _with_ci(r: dict, key: str, spec: str) -> str:
    lo, hi = r[f"{key}_lo"], r[f"{key}_hi"]
    text = _fmt(r[key], spec)
    if math.isnan(lo) or math.isnan(hi):
        return text
    return f"{text} [{_fmt(lo, spec)}, {_fmt(hi, spec)}]"


def format_table(rows: Sequence[dict]) -> str:
    """An aligned text table for the terminal; rows with a warning are marked '!'."""
    header = ["run", "language", "fraction", "ppl", "mlpe", "mlte", "teff", ""]
    body = [
        [
            str(r["run"]), str(r["language"]), _fmt(r["fraction"], ".3g"), _fmt(r["ppl"], ".2f"),
            _with_ci(r, "mlpe", ".2f"), _with_ci(r, "mlte", ".3g"), _with_ci(r, "teff", ".2f"),
            "!" if r.get("warning") else "",
        ]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *body]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI body


def default_out_path(runs: str | os.PathLike) -> Path:
    """Where ``xling teff`` writes by default: ``<runs stem>_teff.csv`` next to RUNS.csv."""
    p = Path(runs)
    return p.with_name(f"{p.stem}_teff.csv")


def teff_command(
    mono: str,
    runs: str,
    out: str | None = None,
    form: str = "loss",
    bootstrap: int = 1000,
    seed: int = 0,
) -> int:
    """Body of ``xling teff``: fit laws from MONO.csv, score RUNS.csv, print and write the table."""
    if form not in FORMS:
        raise XlingError(f"unknown --form {form!r}; use one of: {', '.join(FORMS)}")
    if bootstrap < 0:
        raise XlingError(f"--bootstrap must be >= 0, got {bootstrap}")
    mono_rows = read_csv_rows(mono, ("language", "fraction", "ppl"))
    run_rows = read_csv_rows(runs, ("run", "language", "fraction", "ppl"))
    _check_languages(mono_rows, run_rows)
    used = {str(r["language"]) for r in run_rows}
    fits = fit_languages(mono_rows, form=form, bootstrap=bootstrap, seed=seed, languages=used)
    rows = teff_table(mono_rows, run_rows, fits=fits)
    print(format_table(rows))
    path = write_table(rows, out if out else default_out_path(runs))
    for lang, fit in sorted(fits.items()):
        law = fit.law
        params = ", ".join(f"{k}={v:.4g}" for k, v in law.param_dict.items())
        print(f"note: {lang} law ({law.form} form, {law.n_points} points): {params}", file=sys.stderr)
        for note in fit.notes:
            print(f"note: {lang}: {note}", file=sys.stderr)
    for r in rows:
        if r["warning"]:
            print(f"warning: run {r['run']}, {r['language']}: {r['warning']}", file=sys.stderr)
    print(f"wrote {path}")
    return 0
