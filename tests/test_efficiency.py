"""Token efficiency: scaling-law fits, MLPE/MLTE/TEff, CSV I/O and the `xling teff` body."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest

from xling.analysis.efficiency import efficiency, read_csv_rows, teff_table, write_table
from xling.analysis.scaling_law import ScalingLaw, fit_scaling_law, fraction_interval, law_params
from xling.cli import main
from xling.cli.tables import efficiency_table as format_table
from xling.errors import XlingError

TRUE = (1.5, 1.2, 0.35)  # E, A, alpha of the synthetic loss-space law
FRACTIONS = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0])
BOOT = 200

# Paper §5: monolingual GPT-small EN at 10 %, 50 %, 100 % of the budget; 90/10 EN2 point.
PAPER_EN = ([0.1, 0.5, 1.0], [48.36, 25.31, 21.93])


def true_ppl(x):
    e, a, alpha = TRUE
    return np.exp(e + a * np.asarray(x, dtype=float) ** (-alpha))


def noisy_ppls(noise: float, seed: int = 1, repeats: int = 1):
    """Multiplicative noise on PPL (additive in log space), `repeats` seeds per fraction."""
    rng = np.random.default_rng(seed)
    x = np.repeat(FRACTIONS, repeats)
    return x, true_ppl(x) * np.exp(rng.normal(0.0, noise, x.size))


@pytest.fixture(scope="module")
def fit():
    x, ppl = noisy_ppls(0.01)
    return fit_scaling_law(x, ppl, bootstrap=BOOT, seed=0)


# ----------------------------------------------------------------------------- the fit


def test_fit_recovers_known_law(fit):
    e, a, alpha = fit.law.params
    assert e == pytest.approx(TRUE[0], abs=0.1)
    assert a == pytest.approx(TRUE[1], rel=0.1)
    assert alpha == pytest.approx(TRUE[2], rel=0.1)
    assert fit.law.form == "loss" and fit.law.n_points == FRACTIONS.size
    assert fit.law.x_range == (0.05, 3.0)
    assert fit.law.residual_rms < 0.02
    assert len(fit.bootstrap_laws) > 0.9 * BOOT


def test_three_points_fit_exactly_and_have_no_interval():
    x = [0.1, 0.5, 1.0]
    f = fit_scaling_law(x, true_ppl(x), bootstrap=BOOT)
    assert f.law.params == pytest.approx(TRUE, rel=1e-6)
    assert f.law.residual_rms < 1e-10
    assert f.bootstrap_laws == () and "no interval" in f.notes[0]
    e = efficiency(f, 0.5, 30.0)
    assert math.isnan(e.teff_ci[0]) and math.isfinite(e.teff)


def test_repeated_seeds_per_fraction_are_all_used():
    x, ppl = noisy_ppls(0.01, repeats=3)
    f = fit_scaling_law(x, ppl, bootstrap=0)
    assert f.law.n_points == 3 * FRACTIONS.size
    assert f.law.params[2] == pytest.approx(TRUE[2], rel=0.1)


@pytest.mark.parametrize("form", ["loss", "paper"])
def test_fit_is_the_global_least_squares_optimum(form):
    """No start of a general least-squares solver finds a lower residual than the profile search."""
    from scipy.optimize import least_squares

    from xling.analysis.scaling_law import _fit_z

    rng = np.random.default_rng(7)
    for _ in range(6):
        x = np.sort(rng.choice([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0], size=5, replace=False))
        ppl = true_ppl(x) * np.exp(rng.normal(0.0, 0.05, x.size))
        z = np.log(ppl) if form == "loss" else -1.0 / ppl
        e, a, alpha = _fit_z(x, z, form)
        ours = np.sum((e + a * x ** -alpha - z) ** 2)
        lower = [0.0 if form == "loss" else -np.inf, -np.inf, 1e-6]
        upper = [np.inf if form == "loss" else 0.0, np.inf, 10.0]
        for start_alpha in (0.05, 0.3, 1.0, 3.0):
            start = [0.5 if form == "loss" else -0.05, 0.0, start_alpha]
            sol = least_squares(lambda t, x=x, z=z: t[0] + np.exp(t[1]) * x ** -t[2] - z, start, bounds=(lower, upper))
            assert ours <= 2 * sol.cost * (1 + 1e-9) + 1e-15


def test_a_bootstrap_fitted_at_once_equals_fits_one_by_one():
    from xling.analysis import scaling_law
    from xling.analysis.scaling_law import _fit_many, _fit_z

    rng = np.random.default_rng(3)
    x = FRACTIONS
    zs = np.log(true_ppl(x))[None, :] + rng.normal(0.0, 0.05, (40, x.size))
    at_once = _fit_many(x, zs, "loss")
    assert at_once == pytest.approx(np.array([_fit_z(x, z, "loss") for z in zs]), rel=1e-9, abs=1e-12)
    small_blocks = scaling_law._GRID_BLOCK_ELEMENTS
    try:  # blocks of a few rows: the same numbers
        scaling_law._GRID_BLOCK_ELEMENTS = 3 * len(scaling_law._ALPHA_GRID) * x.size
        assert _fit_many(x, zs, "loss") == pytest.approx(at_once, rel=1e-12, abs=1e-15)
    finally:
        scaling_law._GRID_BLOCK_ELEMENTS = small_blocks


def test_a_ladder_straight_in_log_x_puts_the_paper_exponent_at_its_bound():
    """1/PPL linear in ln x is the paper form's limit b -> 0: the fit says so instead of
    returning an arbitrary point of the flat valley."""
    x = np.array([0.05, 0.1, 0.25, 0.5, 1.0])
    ppl = 1.0 / (0.02 + 0.004 * np.log(x / 0.01))
    f = fit_scaling_law(x, ppl, form="paper", bootstrap=0).law
    assert f.exponent_at_bound == "lower"
    assert f.ppl(x) == pytest.approx(ppl, rel=1e-4)  # its predictions within the ladder still hold
    # a and c are huge and cancel: the printed parameters also give the line in ln x, which reproduces the ladder
    intercept, slope = map(float, re.search(r"1/PPL = (\S+) \+ (\S+) ln x", law_params(f)).groups())
    assert 1 / (intercept + slope * np.log(x)) == pytest.approx(ppl, rel=1e-4)
    assert fit_scaling_law(x, true_ppl(x), form="loss", bootstrap=0).law.exponent_at_bound == ""


def test_a_ladder_that_wants_a_negative_irreducible_loss_puts_e_at_its_bound(fit):
    x = FRACTIONS
    f = fit_scaling_law(x, np.exp(-0.5 + 3.0 * x ** -0.2), bootstrap=0).law
    assert f.params[0] == 0.0 and f.asymptote_at_bound
    assert not fit.law.asymptote_at_bound  # E = 1.5 is well inside
    assert not fit_scaling_law(x, true_ppl(x), form="paper", bootstrap=0).law.asymptote_at_bound
    three = fit_scaling_law(x[[0, 3, -1]], np.exp(-0.5 + 3.0 * x[[0, 3, -1]] ** -0.2), bootstrap=0)
    assert three.law.asymptote_at_bound  # a three-point ladder too: every number read off it says so
    assert any("E is at its bound 0" in w for w in efficiency(three, 0.5, float(three.law.ppl(0.5))).warnings)
    assert not any("E is at its bound" in w for w in efficiency(fit, 0.5, float(fit.law.ppl(0.5))).warnings)


def test_bootstrap_refits_held_at_a_bound_are_flagged(fit):
    """Percentile intervals from refits pinned at a bound are not valid: the fit says how many were."""
    rng = np.random.default_rng(3)
    x = FRACTIONS
    at_zero = fit_scaling_law(x, np.exp(-0.5 + 3.0 * x ** -0.2 + rng.normal(0, 0.01, x.size)), bootstrap=BOOT).notes
    assert any(n.startswith("E at its bound 0 in ") and "not valid at a bound" in n for n in at_zero), at_zero
    assert not any("bound" in n for n in fit.notes)  # E = 1.5 and alpha = 0.35 well inside: no refit at a bound


def test_inverse_round_trips(fit):
    law = fit.law
    ys = np.array([12.0, 20.0, 40.0, 100.0])
    assert law.ppl(law.fraction_for(ys)) == pytest.approx(ys, rel=1e-9)
    assert isinstance(law.ppl(0.5), float) and law.ppl(FRACTIONS).shape == FRACTIONS.shape


def test_fraction_for_is_inf_at_or_below_asymptote(fit):
    law = fit.law
    assert law.asymptote == pytest.approx(math.exp(law.params[0]))
    assert law.fraction_for(law.asymptote) == math.inf
    assert law.fraction_for(law.asymptote * 0.9) == math.inf


def test_paper_form_recovers_its_own_law():
    a, b, c = 0.03, 0.25, 0.08
    x = FRACTIONS
    ppl = 1.0 / (c - a * x ** (-b))
    assert np.all(ppl > 0)
    f = fit_scaling_law(x, ppl, form="paper", bootstrap=0)
    assert f.law.params == pytest.approx((a, b, c), rel=1e-4)
    assert f.law.param_dict.keys() == {"a", "b", "c"}
    assert f.law.asymptote == pytest.approx(1 / c, rel=1e-4)
    assert f.law.fraction_for(f.law.ppl(0.3)) == pytest.approx(0.3)


def test_paper_form_ppl_is_inf_where_its_law_breaks_down():
    law = ScalingLaw("paper", (0.03, 0.25, 0.08), (0.1, 1.0), (20.0, 50.0), 3, 0.0)
    assert law.ppl(1e-4) == math.inf


def test_fewer_than_three_fractions_is_a_user_error():
    with pytest.raises(XlingError, match="3 distinct data fractions, got 2"):
        fit_scaling_law([0.1, 0.1, 0.5, 0.5], [40.0, 41.0, 25.0, 25.5])
    with pytest.raises(XlingError, match="unknown scaling-law form"):
        fit_scaling_law([0.1, 0.5, 1.0], [40.0, 25.0, 22.0], form="cubic")


# ----------------------------------------------------------------------------- efficiency


def test_point_on_the_law_has_teff_one(fit):
    e = efficiency(fit, 0.5, fit.law.ppl(0.5))
    assert e.teff == pytest.approx(1.0, rel=1e-9)
    assert e.mlte == pytest.approx(0.5, rel=1e-9)
    assert e.mlpe == pytest.approx(fit.law.ppl(0.5))
    assert e.warnings == []


def test_reaching_the_ppl_of_twice_the_data_gives_teff_two(fit):
    e = efficiency(fit, 0.4, float(true_ppl(0.8)))
    assert e.teff == pytest.approx(2.0, rel=0.05)
    assert e.teff_ci[0] <= e.teff <= e.teff_ci[1]
    assert e.mlte_ci[0] <= e.mlte <= e.mlte_ci[1]
    assert e.mlpe_ci[0] <= e.mlpe <= e.mlpe_ci[1]


def test_intervals_narrow_as_noise_shrinks():
    widths = []
    for noise in (0.03, 0.01, 0.002):
        x, ppl = noisy_ppls(noise, seed=3)
        e = efficiency(fit_scaling_law(x, ppl, bootstrap=BOOT, seed=0), 0.4, float(true_ppl(0.8)))
        widths.append(e.teff_ci[1] - e.teff_ci[0])
    assert widths[0] > widths[1] > widths[2] > 0


def _profiled_sse(x, ppl, x_star, ppl_star, form="loss"):
    """Brute force: the least SSE (in the form's fitting space) of a law through (x_star, ppl_star) with
    A >= 0 and E within its bounds (loss: ln PPL = E + A·x^-alpha, E >= 0; paper: -1/PPL = E + A·x^-alpha,
    E <= 0), over a dense grid of exponents, A in closed form clipped to its bounds."""
    to_z = np.log if form == "loss" else (lambda p: -1.0 / np.asarray(p))
    z, z_star = to_z(ppl), float(to_z(ppl_star))
    alphas = np.geomspace(1e-6, 10, 200_001)[:, None]
    d = x[None, :] ** -alphas - x_star ** -alphas
    a_max = z_star / x_star ** -alphas[:, 0] if form == "loss" else np.inf  # E = z* - A·u* >= 0, resp. <= 0
    a = np.clip(((z - z_star) * d).sum(1) / (d * d).sum(1), 0, a_max)
    return float((((z - z_star) - a[:, None] * d) ** 2).sum(1).min())


@pytest.mark.parametrize("form,make_ladder,e_at_bound", [
    ("loss", lambda x, rng: true_ppl(x) * np.exp(rng.normal(0, 0.02, x.size)), False),
    ("loss", lambda x, rng: np.exp(-0.5 + 3.0 * x ** -0.2 + rng.normal(0, 0.01, x.size)), True),
    ("paper", lambda x, rng: true_ppl(x) * np.exp(rng.normal(0, 0.02, x.size)), False)],
    ids=["loss, inside the bounds", "loss, E at its bound", "paper"])
def test_the_profile_interval_ends_where_the_f_test_says(form, make_ladder, e_at_bound):
    """At each end the best law through (x*, ppl) fits the ladder exactly as badly as the F-test allows;
    a little inside it fits better, a little outside worse (checked by brute force, not by the fit's code)."""
    from scipy.stats import f as f_dist

    x = FRACTIONS[:6]
    ppl = make_ladder(x, np.random.default_rng(5))
    fit = fit_scaling_law(x, ppl, form=form, bootstrap=0)
    assert fit.law.asymptote_at_bound == e_at_bound
    target = float(fit.law.ppl(0.4))
    best = _profiled_sse(x, ppl, 0.4, target, form)
    threshold = best * (1 + f_dist.ppf(0.95, 1, x.size - 3) / (x.size - 3))
    lo, hi = fraction_interval(fit, target)
    assert 0 < lo < 0.4 < hi < math.inf
    for end, inward in ((lo, 1.02), (hi, 1 / 1.02)):
        assert _profiled_sse(x, ppl, end, target, form) == pytest.approx(threshold, rel=2e-3)
        assert _profiled_sse(x, ppl, end * inward, target, form) < threshold < _profiled_sse(x, ppl, end / inward,
                                                                                            target, form)


def test_the_profile_interval_narrows_with_points_and_needs_a_residual():
    rng = np.random.default_rng(7)
    widths = []
    for repeats in (1, 4):
        x = np.repeat(FRACTIONS, repeats)
        fit = fit_scaling_law(x, true_ppl(x) * np.exp(rng.normal(0, 0.02, x.size)), bootstrap=0)
        lo, hi = fraction_interval(fit, float(true_ppl(0.4)))
        assert lo < fit.law.fraction_for(float(true_ppl(0.4))) < hi
        widths.append(math.log(hi / lo))
    assert widths[0] > widths[1] > 0
    three = fit_scaling_law(FRACTIONS[:3], true_ppl(FRACTIONS[:3]), bootstrap=0)
    assert all(math.isnan(v) for v in fraction_interval(three, float(true_ppl(0.4))))


def test_the_profile_interval_at_its_limits():
    rng = np.random.default_rng(11)
    fit = fit_scaling_law(FRACTIONS, true_ppl(FRACTIONS) * np.exp(rng.normal(0, 0.02, FRACTIONS.size)), bootstrap=0)
    below = fit.law.asymptote * 0.999  # no amount of data reaches it under the law itself
    lo, hi = fraction_interval(fit, below)
    assert hi == math.inf and (lo == math.inf or lo > FRACTIONS.max())
    assert fraction_interval(fit, 0.5) == (math.inf, math.inf)  # ln PPL < 0: no law with E >= 0 gets there
    exact = fit_scaling_law(FRACTIONS, true_ppl(FRACTIONS), bootstrap=0)  # a ladder the law fits exactly
    centre = exact.law.fraction_for(float(true_ppl(0.4)))
    assert fraction_interval(exact, float(true_ppl(0.4))) == (centre, centre)


def test_extrapolation_warns(fit):
    below_data = fit.law.ppl(10.0)  # needs 10x the budget: beyond the fitted fractions
    e = efficiency(fit, 0.5, below_data)
    assert math.isfinite(e.teff) and any("extrapolated" in w for w in e.warnings)
    e = efficiency(fit, 0.01, 200.0)
    assert any("fraction 0.01 is outside" in w for w in e.warnings)
    # a share 1 % below the ladder's lowest point (whole steps made that point 0.1009 for 0.1): not extrapolation
    lo = fit.law.x_range[0]
    assert not any("is outside" in w for w in efficiency(fit, lo * 0.99, 200.0).warnings)
    assert any("is outside" in w for w in efficiency(fit, lo * 0.97, 200.0).warnings)


def test_the_ladders_own_end_point_missed_by_the_law_is_not_called_extrapolated():
    x = np.array(FRACTIONS, dtype=float)
    ppl = true_ppl(x)
    ppl[-1] *= 0.93  # the last point better than the law through the others: the fit passes above it
    end = fit_scaling_law(x, ppl, bootstrap=0)
    e = efficiency(end, float(x[-1]), float(ppl[-1]))  # the ladder's own last point
    warnings = e.warnings
    assert e.mlte > x[-1] and len(warnings) == 1
    assert "lies within the monolingual points'" in warnings[0] and "the law misses the ladder's end" in warnings[0]
    assert not any("extrapolated" in w for w in warnings)  # more monolingual runs would not help


def test_a_degenerate_fit_is_said_on_every_row_it_scores(fit):
    x = np.array([0.05, 0.1, 0.25, 0.5, 1.0])
    ppl = 1 / (0.02 + 0.003 * np.log(x))  # 1/PPL linear in ln x: the paper form's best fit is its limit b -> 0
    degenerate = fit_scaling_law(x, ppl, form="paper", bootstrap=0)
    assert degenerate.law.exponent_at_bound == "lower"
    assert any("degenerate fit, 1/PPL linear in ln x" in w for w in efficiency(degenerate, 0.1, 60.0).warnings)
    assert not any("degenerate" in w for w in efficiency(fit, 0.5, float(fit.law.ppl(0.6))).warnings)


def test_an_estimate_outside_its_own_bootstrap_interval_is_said(fit):
    x, ppl = [0.1, 0.25, 0.5, 1.0], [261.06, 63.24, 11.25, 3.715]  # most resamples break the paper form
    paper = fit_scaling_law(x, ppl, form="paper", bootstrap=400)
    e = efficiency(paper, 0.1, 106.1)
    assert not e.mlte_ci[0] <= e.mlte <= e.mlte_ci[1]
    assert any("lies outside its own bootstrap interval" in w and "bootstrap refits gave a law" in w for w in e.warnings)
    inside = efficiency(fit, 0.5, float(fit.law.ppl(0.6)))
    assert inside.mlte_ci[0] <= inside.mlte <= inside.mlte_ci[1] and not any("outside its own" in w for w in inside.warnings)


def test_a_ladder_with_a_point_twice_or_rising_perplexity_is_noted():
    x, ppl = [0.05, 0.1, 0.1, 0.25, 0.5, 1.0], [430.0, 264.0, 264.0, 127.0, 135.0, 61.0]
    notes = fit_scaling_law(x, ppl, bootstrap=20).notes
    assert any("given more than once: (0.1, 264); counted once" in n for n in notes)
    three = fit_scaling_law([0.25, 0.5, 0.5, 1.0], [200.0, 120.0, 120.0, 90.0], bootstrap=20)
    assert three.law.n_points == 3 and any("no interval" in n for n in three.notes)  # no false interval from a copy
    assert any("rises with more data between fractions 0.25 and 0.5" in n for n in notes)
    seeds = fit_scaling_law([0.1, 0.1, 0.25, 0.5, 1.0], [264.0, 270.0, 127.0, 90.0, 61.0], bootstrap=20).notes
    assert not any("more than once" in n or "rises" in n for n in seeds)  # two seeds at 0.1, a falling ladder


def test_unreachable_ppl_gives_inf_with_a_warning(fit):
    e = efficiency(fit, 0.5, fit.law.asymptote * 0.95)
    assert e.mlte == math.inf and e.teff == math.inf
    assert any("unreachable" in w for w in e.warnings)
    assert e.teff_ci[1] == math.inf


def test_paper_sanity_90_10_en2():
    """Paper: EN2 at 90/10 (10 % of the tokens) reaches 32.81, TEff 2.08 with their fit."""
    for form in ("loss", "paper"):
        f = fit_scaling_law(*PAPER_EN, form=form, bootstrap=0)
        e = efficiency(f, 0.1, 32.81)
        print(f"{form}: TEff EN2 90/10 = {e.teff:.3f}")
        assert 1.5 < e.teff < 3.0
        assert efficiency(f, 0.9, 22.46).teff == pytest.approx(1.0, abs=0.1)  # EN1 ≈ 1


def test_teff_table_rows_and_unknown_language(fit):
    mono = [{"language": "EN", "fraction": x, "ppl": p} for x, p in zip(*noisy_ppls(0.01))]
    runs = [
        {"run": "r1", "language": "EN", "fraction": 0.4, "ppl": float(true_ppl(0.8))},
        {"run": "r1", "language": "EN", "fraction": 0.6, "ppl": float(true_ppl(0.6))},
    ]
    rows = teff_table(mono, runs, bootstrap=BOOT)
    assert [r["teff"] for r in rows] == pytest.approx([2.0, 1.0], rel=0.05)
    assert {"mlpe_lo", "mlte_hi", "teff_lo", "warning"} <= rows[0].keys()
    for r in rows:  # both intervals bracket the row's TEff; the profile's only when asked for
        assert r["teff_lo"] <= r["teff"] <= r["teff_hi"] and r["teff_profile_lo"] <= r["teff"] <= r["teff_profile_hi"]
        assert r["mlte_profile_lo"] == pytest.approx(r["teff_profile_lo"] * r["fraction"])
    assert "teff_profile_lo" not in teff_table(mono, runs, bootstrap=BOOT, profile=False)[0]
    with pytest.raises(XlingError, match=r"'FR'.*only has EN"):
        teff_table(mono, [{"run": "r2", "language": "FR", "fraction": 0.5, "ppl": 20.0}])


# ----------------------------------------------------------------------------- CSV + CLI body


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_read_csv_errors(tmp_path):
    with pytest.raises(XlingError, match="file not found"):
        read_csv_rows(tmp_path / "nope.csv", ["language"])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(XlingError, match="empty"):
        read_csv_rows(tmp_path / "empty.csv", ["language"])
    p = write_csv(tmp_path / "m.csv", ["language", "fraction"], [["EN", 0.1]])
    with pytest.raises(XlingError, match=r"missing column.*ppl"):
        read_csv_rows(p, ["language", "fraction", "ppl"])
    p = write_csv(tmp_path / "b.csv", ["language", "fraction", "ppl"], [["EN", 0.1, 40], ["EN", 0.5, "abc"]])
    with pytest.raises(XlingError, match=r"b\.csv:3: ppl 'abc' is not a number"):
        read_csv_rows(p, ["language", "fraction", "ppl"])
    p = write_csv(tmp_path / "n.csv", ["language", "fraction", "ppl"], [["EN", -0.1, 40]])
    with pytest.raises(XlingError, match=r"n\.csv:2: fraction must be a positive"):
        read_csv_rows(p, ["language", "fraction", "ppl"])
    p = write_csv(tmp_path / "h.csv", ["language", "fraction", "ppl"], [])
    with pytest.raises(XlingError, match="no data rows"):
        read_csv_rows(p, ["language", "fraction", "ppl"])
    p = write_csv(tmp_path / "p.csv", ["language", "fraction", "ppl"], [["EN", 0.1, 40], ["EN", 0.5, 0.9]])
    with pytest.raises(XlingError, match=r"p\.csv:3: ppl '0.9' is below 1"):
        read_csv_rows(p, ["language", "fraction", "ppl"])
    for ragged, fields in (("EN,0.1,40,7", 4), ("EN,0.1", 2)):  # a field too many or too few: not read silently
        (tmp_path / "r.csv").write_text(f"language,fraction,ppl\nEN,0.2,30\n{ragged}\n")
        with pytest.raises(XlingError, match=rf"r\.csv:3: {fields} fields where the header has 3"):
            read_csv_rows(tmp_path / "r.csv", ["language", "fraction", "ppl"])
    (tmp_path / "t.csv").write_text("language,fraction,ppl\nEN,0.2,30,\n")  # a trailing comma adds nothing
    assert read_csv_rows(tmp_path / "t.csv", ["language", "fraction", "ppl"]) == [
        {"language": "EN", "fraction": 0.2, "ppl": 30.0}]
    with pytest.raises(XlingError, match="below 1"):
        fit_scaling_law([0.1, 0.5, 1.0], [1.5, 1.2, 0.8], bootstrap=0)


def test_teff_refuses_an_output_that_is_one_of_its_inputs(tmp_path, capsys):
    mono = write_csv(tmp_path / "mono.csv", ["language", "fraction", "ppl"], [["EN", f, 30 / f] for f in (0.2, 0.5, 1)])
    runs = write_csv(tmp_path / "runs.csv", ["run", "language", "fraction", "ppl"], [["r", "EN", 0.5, 50]])
    before = mono.read_text(), runs.read_text()
    for given in (mono, runs):
        assert main(["teff", "--mono", str(mono), "--runs", str(runs), "--out", str(given)]) == 2
        assert "is the --" in capsys.readouterr().err
    assert (mono.read_text(), runs.read_text()) == before


def test_a_law_rising_without_bound_reads_inf_without_a_numpy_warning():
    with np.errstate(over="raise"):  # (a RuntimeWarning leaked to the terminal)
        law = fit_scaling_law([0.1, 0.5, 1.0], [400.0, 80.0, 40.0], bootstrap=0).law
        assert law.ppl(1e-300) == math.inf


def test_teff_command_end_to_end(tmp_path, capsys):
    x, ppl = noisy_ppls(0.01)
    mono_rows = [["EN", a, b] for a, b in zip(x, ppl)]
    mono = write_csv(tmp_path / "mono.csv", ["language", "fraction", "ppl"], mono_rows)
    runs = write_csv(
        tmp_path / "runs.csv",
        ["run", "language", "fraction", "ppl"],
        [
            ["p10", "EN", 0.9, float(true_ppl(0.9))],
            ["p10", "EN", 0.1, float(true_ppl(0.2))],
            ["x", "EN", 0.5, 3.0],
        ],
    )
    assert main(["teff", "--mono", str(mono), "--runs", str(runs), "--bootstrap", str(BOOT)]) == 0
    captured = capsys.readouterr()
    assert "teff" in captured.out.splitlines()[0] and "p10" in captured.out
    assert "unreachable" in captured.err
    out = tmp_path / "runs_teff.csv"
    rows = list(csv.DictReader(out.open()))
    assert [r["run"] for r in rows] == ["p10", "p10", "x"]
    assert float(rows[1]["teff"]) == pytest.approx(2.0, rel=0.05)
    assert rows[2]["teff"] == "inf" and rows[2]["warning"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file
    assert "profile likelihood" in captured.out.splitlines()[0]
    assert main(["teff", "--mono", str(mono), "--runs", str(runs), "--bootstrap", "0", "--no-profile",
                 "--out", str(tmp_path / "plain.csv")]) == 0
    assert "profile" not in capsys.readouterr().out.splitlines()[0]  # no column of dashes


def test_format_table_shows_intervals():
    row = {
        "run": "r", "language": "EN", "fraction": 0.1, "ppl": 32.81,
        "mlpe": 48.4, "mlpe_lo": 47.0, "mlpe_hi": 50.0,
        "mlte": 0.208, "mlte_lo": 0.19, "mlte_hi": 0.231,  # 0.190: three digits in every bound
        "teff": 2.08, "teff_lo": 1.90, "teff_hi": 2.31, "warning": "",
    }  # fmt: skip
    text = format_table([row])
    assert "2.08 [1.90, 2.31]" in text and "0.208 [0.190, 0.231]" in text
    nan_row = dict(row, teff_lo=math.nan, teff_hi=math.nan)
    assert "2.08 [" not in format_table([nan_row])


def test_write_table_round_trips(tmp_path):
    row = {"run": "r", "language": "EN", "fraction": 0.1, "ppl": 32.81, "mlpe": 48.4, "mlpe_lo": math.nan,
           "mlpe_hi": math.nan, "mlte": math.inf, "mlte_lo": math.nan, "mlte_hi": math.nan,
           "teff": math.inf, "teff_lo": math.nan, "teff_hi": math.nan, "warning": "w"}  # fmt: skip
    p = write_table([row], tmp_path / "sub" / "t.csv")
    (got,) = csv.DictReader(p.open())
    assert got["teff"] == "inf" and got["teff_lo"] == "" and got["ppl"] == "32.81"


# The paper's published clone results (PAPER.md §5): (share of the budget, PPL, published TEff) of
# EN1 / EN2 at 1x, the schedule, ten languages, 2x and 3x. Each is a point of the authors' own law
# (MLTE = TEff x share at that PPL), rounded to the published decimals.
PUBLISHED = [("50/50 EN1", 0.5, 26.13, 0.89), ("50/50 EN2", 0.5, 26.14, 0.89), ("90/10 EN1", 0.9, 22.46, 1.00),
             ("90/10 EN2", 0.1, 32.81, 2.08), ("sched EN1", 0.5, 26.53, 0.83), ("sched EN2", 0.5, 24.44, 1.18),
             ("ten EN1", 0.1, 35.54, 1.69), ("ten EN2", 0.1, 35.74, 1.67), ("half EN1", 0.5, 24.57, 1.15),
             ("half EN2", 0.5 / 9, 33.41, 3.56), ("2x 50/50", 1.0, 23.36, 0.74), ("3x 50/50", 1.5, 22.18, 0.64),
             ("2x 90/10 EN2", 0.2, 23.88, 3.29), ("3x 90/10 EN2", 0.3, 22.27, 3.14)]


def test_the_paper_form_reproduces_every_published_teff(tmp_path, capsys):
    """The paper's form fitted to the points its published TEffs imply gives those TEffs back (to their
    rounding) with the paper's accounting (each language credited with its expected share)."""
    mono = write_csv(tmp_path / "mono.csv", ["language", "fraction", "ppl"],
                     [["EN", share * teff, ppl] for _, share, ppl, teff in PUBLISHED])
    runs = write_csv(tmp_path / "runs.csv", ["run", "language", "fraction", "ppl"],
                     [[name, "EN", share, ppl] for name, share, ppl, _ in PUBLISHED])
    assert main(["teff", "--mono", str(mono), "--runs", str(runs), "--form", "paper", "--bootstrap", "0"]) == 0
    rows = {r["run"]: float(r["teff"]) for r in csv.DictReader((tmp_path / "runs_teff.csv").open())}
    for name, _, _, published in PUBLISHED:
        assert rows[name] == pytest.approx(published, rel=0.01), name  # two published decimals: <= 0.9 % off
    assert rows["90/10 EN2"] == pytest.approx(2.0787, rel=1e-3)  # the headline number, pinned


@pytest.mark.parametrize("form", ["paper", "loss"])
def test_teff_is_exact_on_points_generated_from_a_law_of_its_form(tmp_path, form):
    law = ScalingLaw(form, (0.0394, 0.2047, 0.0847) if form == "paper" else (1.5, 1.2, 0.35), (0.05, 3), (1, 99), 9, 0)
    x = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0, 3.0])
    fit = fit_scaling_law(x, law.ppl(x), form=form, bootstrap=0)
    for share, teff in ((0.1, 2.08), (0.5, 0.89)):
        ppl = law.ppl(teff * share)  # a language that reached the PPL of teff x its share
        assert efficiency(fit, share, ppl).teff == pytest.approx(teff, rel=1e-6)


def test_leave_one_out_error_prefers_the_form_that_generated_the_ladder():
    from xling.analysis.scaling_law import leave_one_out_error

    x = np.array([0.05, 0.1, 0.25, 0.5, 1.0])
    loss_made = np.exp(1.5 + 1.2 * x ** -0.35)
    paper_made = 1 / (0.0847 - 0.0394 * x ** -0.2047)
    assert leave_one_out_error(x, loss_made, "loss") < 1e-6 < leave_one_out_error(x, loss_made, "paper")
    assert leave_one_out_error(x, paper_made, "paper") < 1e-6 < leave_one_out_error(x, paper_made, "loss")
    assert math.isnan(leave_one_out_error(x[:3], loss_made[:3], "loss"))  # 3 points: none can be left out


def test_leave_one_out_laws_refit_without_each_point_and_only_a_perturbed_point_moves_the_law():
    from xling.analysis.scaling_law import leave_one_out_laws

    x = np.array([0.05, 0.1, 0.25, 0.5, 1.0])
    exact = 1 / (0.0847 - 0.0394 * x ** -0.2047)
    refits = leave_one_out_laws(x, exact, "paper")
    assert [i for i, _ in refits] == [0, 1, 2, 3, 4]
    for _, law in refits:  # an exact ladder: every refit is the same law
        assert law.params == pytest.approx((0.0394, 0.2047, 0.0847), rel=1e-3)
    noisy = exact * np.array([1, 1, 1.1, 1, 1])  # one point off the law: only the refit without it recovers the law
    moved = {i: law.fraction_for(30.0) for i, law in leave_one_out_laws(x, noisy, "paper")}
    truth = (0.0394 / (0.0847 - 1 / 30.0)) ** (1 / 0.2047)
    assert moved[2] == pytest.approx(truth, rel=1e-3)
    assert all(abs(moved[i] / truth - 1) > 0.01 for i in (0, 1, 3, 4))
    assert leave_one_out_laws(x[:3], exact[:3], "paper") == []  # 3 points: none can be left out


def test_better_form_is_the_lower_error_with_nan_losing_and_ties_to_the_loss_form():
    from xling.analysis.scaling_law import better_form

    assert better_form({"loss": 0.2, "paper": 0.1}) == "paper"
    assert better_form({"loss": 0.1, "paper": 0.2}) == "loss"
    assert better_form({"loss": math.nan, "paper": 5.0}) == "paper"
    assert better_form({"loss": 0.1, "paper": 0.1}) == "loss"
    assert better_form({"loss": math.nan, "paper": math.nan}) == "loss"  # too few points for either: the default


def test_teff_both_forms_labels_every_row(tmp_path, capsys):
    x, ppl = noisy_ppls(0.01)
    mono = write_csv(tmp_path / "mono.csv", ["language", "fraction", "ppl"], [["EN", a, b] for a, b in zip(x, ppl)])
    runs = write_csv(tmp_path / "runs.csv", ["run", "language", "fraction", "ppl"], [["r", "EN", 0.1, 40.0]])
    assert main(["teff", "--mono", str(mono), "--runs", str(runs), "--form", "both", "--bootstrap", "20"]) == 0
    rows = list(csv.DictReader((tmp_path / "runs_teff.csv").open()))
    assert [r["form"] for r in rows] == ["loss", "paper"] and "form" in capsys.readouterr().out.splitlines()[0]


def test_the_ladder_read_without_a_law():
    """ladder_mlte: exact on a power law (linear in log-log), monotone where a ladder point is out of order,
    NaN outside the ladder's perplexities (no extrapolation)."""
    from xling.analysis.efficiency import ladder_mlte

    x = [0.05, 0.1, 0.25, 0.5, 1.0]
    law = lambda v: 40 * v ** -0.3
    ppl = [law(v) for v in x]
    for v in (0.05, 0.07, 0.3, 1.0):
        assert ladder_mlte(x, ppl, law(v)) == pytest.approx(v, rel=1e-9)
    assert math.isnan(ladder_mlte(x, ppl, law(2.0))) and math.isnan(ladder_mlte(x, ppl, law(0.01)))
    bumpy = [law(0.05), law(0.1), law(0.05) * 1.01, law(0.5), law(1.0)]  # 0.25 worse than 0.05: pooled
    assert ladder_mlte(x, bumpy, law(0.5)) == pytest.approx(0.5, rel=1e-9)
    assert ladder_mlte(x + [0.5], ppl + [law(0.5) * 1.2], law(1.0)) == pytest.approx(1.0, rel=1e-9)  # repeats


def test_a_three_point_ladder_says_why_it_has_no_interval():
    mono = [{"language": "EN", "fraction": f, "ppl": p} for f, p in [(0.25, 60.0), (0.5, 40.0), (1.0, 30.0)]]
    (row,) = teff_table(mono, [{"run": "r", "language": "EN", "fraction": 0.5, "ppl": 35.0}])
    assert math.isnan(row["teff_lo"]) and "3 parameters and 3 ladder points" in row["warning"]


def test_a_four_point_ladder_says_its_intervals_rest_on_one_degree_of_freedom(fit):
    x = np.array([0.1, 0.25, 0.5, 1.0])
    four = fit_scaling_law(x, true_ppl(x) * np.exp([0.01, -0.01, 0.005, 0.0]), bootstrap=50)
    assert any("one residual degree of freedom" in w for w in efficiency(four, 0.5, 40.0).warnings)
    assert not any("degree of freedom" in w for w in efficiency(fit, 0.5, 40.0).warnings)  # more points: not said


def test_a_ladder_point_read_back_through_its_law_is_inside_the_ladder():
    x = np.array([0.02027, 0.04955, 0.0991])  # three points: the law passes through them
    law = fit_scaling_law(x, true_ppl(x), bootstrap=0)
    e = efficiency(law, 0.0991, float(law.law.ppl(0.0991)))
    assert e.mlte == pytest.approx(0.0991) and not any("misses the ladder's end" in w for w in e.warnings)
