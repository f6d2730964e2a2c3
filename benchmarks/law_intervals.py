"""How often the monolingual law's two intervals of MLTE cover the truth on a short ladder (a simulation).

    python benchmarks/law_intervals.py [--form loss|paper] [--fit loss|paper|chosen] [--law ...]
                                       [--fractions 0.05,0.1,0.25,0.5,1] [--noise 0.02] [--at 0.25]
                                       [--reps 200] [--bootstrap 500]

Ladders are drawn from a law, times normal noise in ln PPL: the loss form ln PPL = E + A·x^(-alpha)
(default: the demo's EN1 fit of 2026-11-27, E = 1.618, A = 2.454, alpha = 0.2001) or the paper's
1/PPL = c - a·x^(-b) (default: the law through the paper's GPT-small English points, a = 0.0330,
b = 0.2444, c = 0.0786), on the demo's five fractions by default. An --at beyond the largest
fraction tests an extrapolated MLTE. Each ladder is fitted with --fit (default: the true law's own form;
the other form: a law form that misfits the ladder; `chosen`: both forms fitted and the one with the
lower leave-one-out error kept, as the report's verdicts choose) as a report fits it (`fit_scaling_law`, the residual bootstrap with the
report's 500 refits), and the data fraction at which the fitted law reaches the true law's PPL at
--at (the true MLTE is --at) is bracketed by the bootstrap's 95 % percentile interval and by the
profile-likelihood interval (`fraction_interval`). Prints how often each covers the truth (nominal
0.95), their median widths in ln x, and in how many fits E sits at its bound 0. Deterministic
(seeded).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
from tqdm import tqdm

from xling.analysis.efficiency import efficiency
from xling.analysis.scaling_law import FORMS, better_form, fit_scaling_law, leave_one_out_error


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def true_ppl(form: str, law, x):
    """The true law's PPL: loss form (E, A, alpha): exp(E + A x^-alpha); paper form (a, b, c): 1 / (c - a x^-b)."""
    x = np.asarray(x, dtype=float)
    if form == "loss":
        e, a, alpha = law
        return np.exp(e + a * x ** -alpha)
    a, b, c = law
    return 1.0 / (c - a * x ** -b)


def _fitted(x, ppl, fit_form: str, bootstrap: int, seed: int):
    """The ladder's fit in `fit_form`, or for "chosen" in the form a report's verdicts would use."""
    if fit_form == "chosen":
        fit_form = better_form({f: leave_one_out_error(x, ppl, f) for f in FORMS})
    return fit_scaling_law(x, ppl, form=fit_form, bootstrap=bootstrap, seed=seed)


def simulate(fractions, law, noise: float, at: float, reps: int, bootstrap: int, form: str = "loss",
             fit_form: str | None = None) -> dict:
    """Coverage and median ln-width of the bootstrap and profile intervals of MLTE over `reps` ladders
    drawn from the law of `form` and fitted with `fit_form` (default: `form`; see `_fitted`)."""
    x = np.asarray(fractions, dtype=float)
    if not np.all(np.isfinite(true_ppl(form, law, [*x, at]))) or np.any(true_ppl(form, law, [*x, at]) <= 0):
        raise ValueError("the true law gives no finite positive PPL at some fraction")
    target = float(true_ppl(form, law, at))
    rng = np.random.default_rng(0)
    covered = {"bootstrap": 0, "profile": 0}
    widths = {"bootstrap": [], "profile": []}
    at_bound = exponent_at_bound = 0
    fitted_forms = dict.fromkeys(FORMS, 0)
    for rep in tqdm(range(reps), desc="ladders", file=sys.stderr):
        ppl = true_ppl(form, law, x) * np.exp(rng.normal(0.0, noise, x.size))
        fit = _fitted(x, ppl, fit_form or form, bootstrap, rep)
        fitted_forms[fit.law.form] += 1
        at_bound += fit.law.asymptote_at_bound
        exponent_at_bound += bool(fit.law.exponent_at_bound)
        result = efficiency(fit, 1.0, target, profile=True)
        for name, (lo, hi) in (("bootstrap", result.mlte_ci), ("profile", result.mlte_profile)):
            covered[name] += bool(lo <= at <= hi)
            if 0 < lo <= hi < math.inf:
                widths[name].append(math.log(hi / lo))
    return {"coverage": {k: v / reps for k, v in covered.items()},
            "median_ln_width": {k: float(np.median(v)) if v else math.nan for k, v in widths.items()},
            "unbounded": {k: reps - len(v) for k, v in widths.items()}, "e_at_bound": at_bound,
            "exponent_at_bound": exponent_at_bound, "fitted_forms": fitted_forms, "reps": reps}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fractions", type=_floats, default=[0.05, 0.1, 0.25, 0.5, 1.0], help="the ladder's data fractions")
    p.add_argument("--form", choices=["loss", "paper"], default="loss", help="the true law's form (also the one fitted, unless --fit)")
    p.add_argument("--fit", choices=[*FORMS, "chosen"], help="the form fitted (default: --form's); chosen: the one "
                   "with the lower leave-one-out error, as the report's verdicts use")
    p.add_argument("--law", type=_floats, help="the true law: E,A,ALPHA (loss form; default the demo's EN1 fit) or "
                   "a,b,c (paper form; default the paper's GPT-small English law, 0.0330,0.2444,0.0786)")
    p.add_argument("--noise", type=float, default=0.02, help="standard deviation of the noise in ln PPL")
    p.add_argument("--at", type=float, default=0.25, help="the true MLTE: the fraction whose PPL is bracketed")
    p.add_argument("--reps", type=int, default=200, help="simulated ladders")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap refits per ladder (the report's 500)")
    args = p.parse_args(argv)
    args.law = args.law or ([1.618, 2.454, 0.2001] if args.form == "loss" else [0.0330, 0.2444, 0.0786])
    if (len(args.law) != 3 or len(set(args.fractions)) < 4 or min(args.fractions) <= 0 or args.at <= 0
            or args.noise <= 0 or args.reps < 1 or args.bootstrap < 1):
        print("need --law E,A,ALPHA, >= 4 distinct positive --fractions (a residual to resample), --at > 0, "
              "--noise > 0, --reps >= 1 and --bootstrap >= 1", file=sys.stderr)
        return 2
    try:
        r = simulate(args.fractions, args.law, args.noise, args.at, args.reps, args.bootstrap, args.form, args.fit)
    except ValueError as exc:
        print(f"--law: {exc}", file=sys.stderr)
        return 2
    fitted = ", ".join(f"{form} form {n}" for form, n in r["fitted_forms"].items() if n)
    print(f"ladder {args.fractions}, {args.form}-form law {args.law}, noise {args.noise} in ln PPL, true MLTE "
          f"{args.at}, {r['reps']} ladders fitted with: {fitted}; E at its bound in {r['e_at_bound']} fits "
          f"(loss form), the exponent in {r['exponent_at_bound']}")
    for name in ("bootstrap", "profile"):
        print(f"  {name:<9} covers the truth in {r['coverage'][name]:.2f} (nominal 0.95), median width "
              f"{r['median_ln_width'][name]:.3f} in ln x (of the bounded ones), unbounded in {r['unbounded'][name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
