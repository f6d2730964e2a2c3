"""Monolingual scaling laws: PPL as a function of the fraction x of the reference budget T.

Two forms, both the three-parameter power law ``z = E + A · x^(-alpha)`` in a transformed
space z, so one fitting routine serves both:

- ``form="loss"`` (default): ln PPL = E + A · x^(-alpha), E ≥ 0, fitted in ln PPL. The form of
  the scaling-law literature (Kaplan et al. 2020; Hoffmann et al. 2022); E is an irreducible
  loss, and seed noise, roughly multiplicative in PPL, is homoscedastic in ln PPL.
- ``form="paper"``: the authors' 1/PPL = c - a · x^(-b) (a, b, c > 0), fitted in 1/PPL space as
  they did (z = -1/PPL, E = -c), so results can be compared with theirs.

The fit starts from a grid over E (for fixed E the law is linear in log-log space) and is refined
with ``scipy.optimize.least_squares`` under bounds. Both laws have an asymptote (exp(E), resp.
1/c): a perplexity at or below it is unreachable by monolingual training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..errors import XlingError

FORMS = ("loss", "paper")
NUM_PARAMS = 3
MIN_FRACTIONS = 3


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


def leave_one_out_error(fractions: Sequence[float], ppls: Sequence[float], form: str) -> float:
    """How well the form predicts a ladder point it was not fitted to: the RMS, over points, of
    ln(predicted PPL / measured PPL) with the law refitted without that point.

    In ln PPL for both forms, so the two are comparable; inf when a refit predicts no finite PPL
    (the paper form does for small fractions); nan when no point can be left out (each refit
    needs MIN_FRACTIONS distinct fractions).
    """
    x, ppl = _check_points(fractions, ppls, form)
    errors = []
    for i in range(x.size):
        rest = np.arange(x.size) != i
        if np.unique(x[rest]).size < MIN_FRACTIONS:
            continue
        law = fit_scaling_law(x[rest], ppl[rest], form=form, bootstrap=0).law
        with np.errstate(over="ignore", divide="ignore"):
            errors.append(math.log(law.ppl(x[i]) / ppl[i]) if math.isfinite(law.ppl(x[i])) else math.inf)
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else math.nan
