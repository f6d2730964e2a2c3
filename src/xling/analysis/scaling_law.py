"""Monolingual scaling laws: PPL as a function of the fraction x of the reference budget T.

Two forms, both the three-parameter power law ``z = E + A · x^(-alpha)`` in a transformed
space z, so one fitting routine serves both:

- ``form="loss"`` (default): ln PPL = E + A · x^(-alpha), E ≥ 0, fitted in ln PPL. The form of
  the scaling-law literature (Kaplan et al. 2020; Hoffmann et al. 2022); E is an irreducible
  loss, and seed noise, roughly multiplicative in PPL, is homoscedastic in ln PPL.
- ``form="paper"``: the authors' 1/PPL = c - a · x^(-b) (a, b, c > 0), fitted in 1/PPL space as
  they did (z = -1/PPL, E = -c), so results can be compared with theirs.

For a fixed exponent the law is linear in (E, A), so the fit searches the exponent alone (a grid,
then golden section) and solves (E, A) in closed form under the bounds: the global least-squares
optimum, for a whole bootstrap at once. Both laws have an asymptote (exp(E), resp.
1/c): a perplexity at or below it is unreachable by monolingual training.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import XlingError

FORMS = ("loss", "paper")
NUM_PARAMS = 3
MIN_FRACTIONS = 3
# The exponent's bounds, and the grid the profile search starts from (steps of 5 %, with the lower
# bound itself, so a ladder that wants no curvature still finds it).
ALPHA_BOUNDS = (1e-6, 10.0)
_ALPHA_GRID = np.concatenate([[ALPHA_BOUNDS[0]], np.geomspace(1e-4, ALPHA_BOUNDS[1], 241)])
_GRID_BLOCK_ELEMENTS = 1 << 18  # bootstrap rows x grid x points searched at once
_GOLDEN_STEPS = 80  # golden-section steps within a grid cell: the cell shrinks below double precision
# ... and for the profile, which only asks whether a minimum is under a threshold: the SSE near a minimum
# is quadratic in alpha, so a cell shrunk 0.618^30 ~ 5e-7 times leaves it exact to ~1e-13
_PROFILE_GOLDEN_STEPS = 30


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

    @property
    def exponent_at_bound(self) -> str:
        """"" when the fitted exponent is inside ALPHA_BOUNDS; else which bound it sits at ("lower",
        "upper"): the ladder's least-squares optimum lies beyond the range searched, so the law's
        parameters mean little one by one (its predictions within the ladder still fit it)."""
        alpha = self._z_params()[2]
        return "lower" if alpha <= ALPHA_BOUNDS[0] * 1.001 else "upper" if alpha >= ALPHA_BOUNDS[1] * 0.999 else ""

    @property
    def asymptote_at_bound(self) -> bool:
        """The loss form's E sits at its bound 0: the ladder alone would put the irreducible loss below
        zero (a perplexity under 1), so it does not pin down the asymptote, and what leans on it
        (extrapolation, intervals of parameters) is rough."""
        return self.form == "loss" and self.params[0] <= 1e-12

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
    bootstrap_laws: tuple[ScalingLaw, ...] = field(default=(), repr=False)  # (hundreds: not in its repr)
    notes: tuple[str, ...] = ()  # e.g. why there is no interval
    points: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())  # the ladder fitted: fractions, PPLs


def law_params(law: ScalingLaw, equals: str = " = ") -> str:
    """A law's parameters to six digits; at the paper form's limit b -> 0, where a and c are huge and cancel (six
    digits of each would not reproduce one perplexity), also the line in ln x that the law then is."""
    text = ", ".join(f"{k}{equals}{v:.6g}" for k, v in law.param_dict.items())
    if law.form == "paper" and law.exponent_at_bound == "lower":
        a, b, c = law.params
        text += f" (at b → 0: 1/PPL = {c - a:.6g} + {a * b:.6g} ln x)"
    return text


# What a perplexity below 1 is, and what a law with E at its bound does not tell (said wherever they are met).
BELOW_ONE = ("which no perplexity can be (the exp of a mean negative log-probability); give perplexities, not "
             "probabilities or losses")
E_AT_BOUND = ("E is at its bound 0 (the ladder alone would put the irreducible loss below zero): the ladder does not "
              "pin down the asymptote")


def _ppl_to_z(form: str, ppl: np.ndarray) -> np.ndarray:
    return np.log(ppl) if form == "loss" else -1.0 / ppl


def _z_to_ppl(form: str, z: np.ndarray) -> np.ndarray:
    if form == "loss":
        with np.errstate(over="ignore"):  # a law that rises without bound: inf, as the paper form's 1/PPL <= 0
            return np.exp(z)
    with np.errstate(divide="ignore"):
        return np.where(z < 0, -1.0 / np.where(z < 0, z, -1.0), np.inf)


def _scalar_or_array(a: np.ndarray):
    return float(a) if np.ndim(a) == 0 else a


# ----------------------------------------------------------------------------- fitting


def _e_bounds(form: str) -> tuple[float, float]:
    # loss: E = irreducible loss >= 0; paper: E = -c <= 0 (c > 0).
    return (0.0, math.inf) if form == "loss" else (-math.inf, 0.0)


def _best_linear(u: np.ndarray, z: np.ndarray, e_bounds: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """For fixed exponents (u = x^-alpha), the least-squares E and A >= 0 of z = E + A·u with E
    within its bounds, and the sum of squared residuals. Any leading axes broadcast.

    The problem is a convex quadratic over a box, so its minimum is the unconstrained one if
    feasible, else the best of the box's edges (E at a finite bound, or A = 0), each solved in
    closed form.
    """
    mu, mz = u.mean(-1, keepdims=True), z.mean(-1, keepdims=True)
    uc = u - mu
    a = (uc * (z - mz)).sum(-1, keepdims=True) / np.maximum((uc * uc).sum(-1, keepdims=True), 1e-300)
    candidates = [(mz - a * mu, a)]
    for bound in e_bounds:
        if math.isfinite(bound):
            edge_a = (u * (z - bound)).sum(-1, keepdims=True) / np.maximum((u * u).sum(-1, keepdims=True), 1e-300)
            candidates.append((np.full_like(mz, bound), edge_a))
    candidates.append((np.clip(mz, *e_bounds), np.zeros_like(mz)))
    best_e, best_a, best_sse = None, None, None
    for e, a in candidates:
        feasible = (e >= e_bounds[0]) & (e <= e_bounds[1]) & (a >= 0)
        sse = np.where(feasible, ((e + a * u - z) ** 2).sum(-1, keepdims=True), np.inf)
        if best_sse is None:
            best_e, best_a, best_sse = e, a, sse
        else:
            better = sse < best_sse
            best_e, best_a, best_sse = (np.where(better, e, best_e), np.where(better, a, best_a),
                                        np.where(better, sse, best_sse))
    return best_e[..., 0], best_a[..., 0], best_sse[..., 0]


def _fit_many(x: np.ndarray, zs: np.ndarray, form: str) -> np.ndarray:
    """`_fit_rows` in blocks of rows small enough that the grid search stays within a few MB."""
    zs = np.asarray(zs, dtype=float)
    rows = max(1, _GRID_BLOCK_ELEMENTS // (len(_ALPHA_GRID) * max(1, x.size)))
    return np.concatenate([_fit_rows(x, zs[i:i + rows], form) for i in range(0, len(zs), rows)] or [np.empty((0, 3))])


def _fit_rows(x: np.ndarray, zs: np.ndarray, form: str) -> np.ndarray:
    """Least-squares (E, A, alpha) of z = E + A·x^(-alpha) for each row of zs [R, n], under the
    form's bounds (A >= 0, alpha in ALPHA_BOUNDS). Returns [R, 3].

    Variable projection: for a fixed alpha the law is linear in (E, A) (`_best_linear`), so the fit
    is a search over alpha alone (`_minimise_over_alpha`), for all rows at once (a bootstrap's
    thousand refits in one vectorised pass): the global least-squares optimum to the grid's
    resolution, not a local one.
    """
    e_bounds = _e_bounds(form)
    zs = zs[:, None, :]  # [R, 1, n]

    def sse_at(alpha):  # alpha [R, K] -> residual sums of squares [R, K]
        return _best_linear(x[None, None, :] ** -alpha[:, :, None], zs, e_bounds)[2]

    with np.errstate(over="ignore", invalid="ignore"):
        alpha, _ = _minimise_over_alpha(sse_at, len(zs))
        e, a, _ = _best_linear(x[None, None, :] ** -alpha[:, None, None], zs, e_bounds)
    return np.column_stack([e[:, 0], a[:, 0], alpha])


def _minimise_over_alpha(sse_at, rows: int, golden_steps: int = _GOLDEN_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """For each of `rows` problems, the exponent in ALPHA_BOUNDS that minimises `sse_at` (alpha
    [rows, K] -> residual sums of squares [rows, K]; non-finite counts as no fit) and that minimum:
    a fine grid first, then golden section within the best grid cell, its point kept only where it
    beats the grid's best."""

    def sse(alpha):
        out = sse_at(alpha)
        return np.where(np.isfinite(out), out, np.inf)

    grid_sse = sse(np.broadcast_to(_ALPHA_GRID, (rows, len(_ALPHA_GRID))))  # [rows, G]
    cell = np.argmin(grid_sse, axis=1)
    lo = _ALPHA_GRID[np.maximum(cell - 1, 0)]
    hi = _ALPHA_GRID[np.minimum(cell + 1, len(_ALPHA_GRID) - 1)]

    def profile(alpha):  # [rows] -> [rows]
        return sse(alpha[:, None])[:, 0]

    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = profile(c), profile(d)
    for _ in range(golden_steps):
        left = fc <= fd  # the minimum lies in [lo, d], else in [c, hi]
        lo, hi = np.where(left, lo, c), np.where(left, d, hi)
        c, d = np.where(left, hi - ratio * (hi - lo), d), np.where(left, c, lo + ratio * (hi - lo))
        f_new = profile(np.where(left, c, d))  # one new point per row; the other is kept
        fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
    alpha = np.clip((lo + hi) / 2, *ALPHA_BOUNDS)
    grid_best = grid_sse[np.arange(rows), cell]
    golden = profile(alpha)
    better = golden <= grid_best
    return np.where(better, alpha, _ALPHA_GRID[cell]), np.where(better, golden, grid_best)


def _fit_z(x: np.ndarray, z: np.ndarray, form: str) -> np.ndarray:
    """Least-squares (E, A, alpha) of z = E + A·x^(-alpha) under the form's bounds."""
    return _fit_many(x, z[None, :], form)[0]


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
    if np.any(ppl < 1):
        raise XlingError(f"a monolingual perplexity of {ppl.min():g} is below 1, {BELOW_ONE}")
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
    ladder_notes = _ladder_notes(x, ppl)
    _, first = np.unique(np.stack([x, ppl]), axis=1, return_index=True)  # a point given twice counts once
    x, ppl = x[np.sort(first)], ppl[np.sort(first)]
    z = _ppl_to_z(form, ppl)
    zparams = _fit_z(x, z, form)
    law = _make_law(form, zparams, x, ppl, z)
    points = (tuple(map(float, x)), tuple(map(float, ppl)))
    if bootstrap <= 0:
        return ScalingFit(law, (), ladder_notes + ("bootstrap disabled: no intervals",), points)
    dof = x.size - NUM_PARAMS
    if dof <= 0:
        note = (
            f"no interval: {x.size} points for {NUM_PARAMS} parameters leave no residual to "
            "resample; add fractions or seeds"
        )
        return ScalingFit(law, (), ladder_notes + (note,), points)
    e, a, alpha = zparams
    fitted = e + a * x ** (-alpha)
    resid = (z - fitted) - (z - fitted).mean()
    resid *= math.sqrt(x.size / dof)
    rng = np.random.default_rng(seed)
    z_stars = np.array([fitted + rng.choice(resid, size=resid.size, replace=True) for _ in range(bootstrap)])
    # paper form: a resample that pushes 1/PPL past 0 is not a valid one
    valid = z_stars[np.all(np.isfinite(_z_to_ppl(form, z_stars)), axis=1)]
    fits = _fit_many(x, valid, form)
    finite = np.all(np.isfinite(fits), axis=1)  # a refit that failed numerically is dropped
    boot = [_make_law(form, params, x, ppl, z_star) for params, z_star in zip(fits[finite], valid[finite])]
    notes = ()
    if len(boot) < 0.9 * bootstrap:
        invalid, failed = bootstrap - len(valid), int((~finite).sum())
        notes = (f"only {len(boot)} of {bootstrap} bootstrap refits gave a law ({invalid} resamples pushed the "
                 f"paper form's 1/PPL past 0, {failed} refits failed numerically); intervals are rough",)
    return ScalingFit(law, tuple(boot), ladder_notes + notes + _bound_notes(boot), points)


def ladder_means(fractions: Sequence[float], ppls: Sequence[float]) -> dict[float, float]:
    """Each distinct fraction's geometric-mean perplexity (its seeds pooled), by increasing fraction."""
    x, ppl = np.asarray(fractions, dtype=float), np.asarray(ppls, dtype=float)
    return {float(f): float(np.exp(np.log(ppl[x == f]).mean())) for f in np.unique(x)}


def _ladder_notes(x: np.ndarray, ppl: np.ndarray) -> tuple[str, ...]:
    """What to check in the ladder itself: a point given twice (counted once: a copy would narrow every
    interval), and a larger fraction with a higher mean perplexity than a smaller one (the law, decreasing,
    cannot follow it)."""
    notes = []
    pairs = list(zip(x.tolist(), ppl.tolist()))
    twice = sorted({pair for pair in pairs if pairs.count(pair) > 1})
    if twice:
        notes.append("the same point (fraction, PPL) given more than once: " + ", ".join(f"({f:g}, {v:g})" for f, v in twice)
                     + "; counted once (a run listed twice?)")
    rising = [(a, b) for (a, pa), (b, pb) in itertools.pairwise(ladder_means(x, ppl).items()) if pb > pa]
    if rising:
        notes.append("the ladder's perplexity rises with more data between fractions " + ", ".join(
            f"{a:g} and {b:g}" for a, b in rising) + ": the law (decreasing) cannot follow it; check those runs")
    return tuple(notes)


def _bound_notes(boot: list[ScalingLaw]) -> tuple[str, ...]:
    """A note where many bootstrap refits sit at a parameter's bound. Percentile intervals assume the
    refits can move to either side of the estimate; refits held at a bound cannot, so the intervals
    are then conditional on the bound and may be too narrow (no correction is made)."""
    at_bound = {"E at its bound 0": sum(law.asymptote_at_bound for law in boot),
                "the exponent at a bound of its range": sum(bool(law.exponent_at_bound) for law in boot)}
    return tuple(f"{what} in {n} of {len(boot)} bootstrap refits: the percentile intervals are not valid at a "
                 "bound (those refits cannot move past it) and may be too narrow"
                 for what, n in at_bound.items() if n >= 0.05 * len(boot) > 0)


def fraction_interval(fit: ScalingFit, ppl: float, level: float = 0.95) -> tuple[float, float]:
    """Profile-likelihood interval of the data fraction at which the law reaches `ppl` (MLTE).

    The fractions x* for which the best law of the form through the point (x*, ppl), within the
    form's bounds, still fits the ladder: SSE(x*) <= SSE_min · (1 + F(1, n-3; level) / (n-3)), the
    F-test's approximate interval for nonlinear least squares (Bates & Watts 1988, ch. 6; exact only
    for a linear law with normal errors). It takes the t quantile of the n - 3 residual degrees of
    freedom into account, which the residual bootstrap's percentiles do not: with a 5-point ladder
    those cover the truth far less often than they say (`benchmarks/law_intervals.py`, README).

    The interval is the connected run, around the law's own MLTE, of fractions searched from 1/1000
    of the smallest ladder fraction to 10,000 times the largest: an end at 0 or inf means unbounded
    within that range; (inf, inf) means no law the ladder allows reaches `ppl` there (MLTE unbounded);
    (nan, nan) without a residual degree of freedom; (MLTE, MLTE) for a ladder the law fits exactly.
    Calibration was checked by simulation for both forms on ladders drawn from the form itself, inside
    and beyond the ladder (README, `benchmarks/law_intervals.py`): not for a form that misfits the ladder.
    """
    x, ppls = (np.asarray(v, dtype=float) for v in fit.points)
    dof = x.size - NUM_PARAMS
    if dof <= 0 or not (ppl > 0 and math.isfinite(ppl)):
        return (math.nan, math.nan)
    from scipy.stats import f as f_dist

    form, e_bounds = fit.law.form, _e_bounds(fit.law.form)
    z, z_star = _ppl_to_z(form, ppls), float(_ppl_to_z(form, np.asarray(ppl)))
    e, a, alpha = fit.law._z_params()
    best = float(((e + a * x ** -alpha - z) ** 2).sum())
    centre = fit.law.fraction_for(ppl)
    if best <= 1e-20 * float((z * z).sum()):  # an exact fit: the threshold would be rounding noise
        return (centre, centre)
    threshold = best * (1 + f_dist.ppf(level, 1, dof) / dof)

    def inside(x_stars: np.ndarray) -> np.ndarray:  # [K] -> whether the profiled SSE at each x* is within it
        def sse_at(alphas):  # [K, G] -> [K, G]: the best A >= 0 for the law through (x*, ppl)
            u_star = x_stars[:, None] ** -alphas
            d = x[None, None, :] ** -alphas[..., None] - u_star[..., None]  # z - z* = A·d
            a = ((z - z_star) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-300)
            # E = z* - A·u* within its bounds; a convex quadratic in A, so clipping keeps it optimal
            a_lo, a_hi = np.maximum(0.0, (z_star - e_bounds[1]) / u_star), (z_star - e_bounds[0]) / u_star
            a = np.clip(a, a_lo, np.maximum(a_lo, a_hi))
            return np.where(a_lo <= a_hi, ((z - z_star - a[..., None] * d) ** 2).sum(-1), np.inf)

        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return _minimise_over_alpha(sse_at, len(x_stars), _PROFILE_GOLDEN_STEPS)[1] <= threshold

    grid = np.geomspace(x.min() / 1e3, x.max() * 1e4, 241)
    grid = np.unique(np.append(grid, centre)) if 0 < centre < math.inf else grid  # (0: a flat law, below the grid)
    ok = inside(grid)
    if not ok.any():
        return (centre, centre) if centre == 0 else (math.inf, math.inf)
    where = np.flatnonzero(ok)  # start from the inside point nearest the law's own MLTE
    i = int(where[np.argmin(np.abs(where - np.searchsorted(grid, min(centre, grid[-1]))))])
    run_lo, run_hi = i, i
    while run_lo > 0 and ok[run_lo - 1]:
        run_lo -= 1
    while run_hi < len(grid) - 1 and ok[run_hi + 1]:
        run_hi += 1
    # Both crossings bisected at once, in log x (a grid cell is 7-9 % wide: 24 halvings reach ~1e-8)
    lo_in, lo_out = np.log(grid[run_lo]), np.log(grid[max(run_lo - 1, 0)])
    hi_in, hi_out = np.log(grid[run_hi]), np.log(grid[min(run_hi + 1, len(grid) - 1)])
    pair_in, pair_out = np.array([lo_in, hi_in]), np.array([lo_out, hi_out])
    for _ in range(24):
        mid = (pair_in + pair_out) / 2
        now = inside(np.exp(mid))
        pair_in, pair_out = np.where(now, mid, pair_in), np.where(now, pair_out, mid)  # (grid > 0: logs finite)
    ends = np.exp(pair_in)
    return (0.0 if run_lo == 0 else float(ends[0]), math.inf if run_hi == len(grid) - 1 else float(ends[1]))


def leave_one_out_error(fractions: Sequence[float], ppls: Sequence[float], form: str,
                        refits: list[tuple[int, ScalingLaw]] | None = None) -> float:
    """How well the form predicts a ladder point it was not fitted to: the RMS, over points, of
    ln(predicted PPL / measured PPL) with the law refitted without that point.

    In ln PPL for both forms, so the two are comparable; inf when a refit predicts no finite PPL
    (the paper form does for small fractions); nan when no point can be left out (each refit
    needs MIN_FRACTIONS distinct fractions). `refits`: `leave_one_out_laws` of these points, where already made.
    """
    x, ppl = _check_points(fractions, ppls, form)
    errors = []
    for i, law in leave_one_out_laws(x, ppl, form) if refits is None else refits:
        with np.errstate(over="ignore", divide="ignore"):
            errors.append(math.log(law.ppl(x[i]) / ppl[i]) if math.isfinite(law.ppl(x[i])) else math.inf)
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else math.nan


def leave_one_out_laws(fractions: Sequence[float], ppls: Sequence[float], form: str) -> list[tuple[int, ScalingLaw]]:
    """The law refitted without each ladder point in turn, as (index left out, law): how much one point
    moves it. Only where the rest still has MIN_FRACTIONS distinct fractions (none for a 3-point ladder)."""
    x, ppl = _check_points(fractions, ppls, form)
    refits = []
    for i in range(x.size):
        rest = np.arange(x.size) != i
        if np.unique(x[rest]).size >= MIN_FRACTIONS:
            refits.append((i, fit_scaling_law(x[rest], ppl[rest], form=form, bootstrap=0).law))
    return refits


def better_form(errors: dict[str, float]) -> str:
    """The form whose leave-one-out error (`leave_one_out_error`, by form) is lower: the one a report's
    verdicts use. An error that could not be computed (nan) loses; a tie goes to the loss form."""
    return min(FORMS, key=lambda f: (np.nan_to_num(errors[f], nan=np.inf), f != "loss"))
