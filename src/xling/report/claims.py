"""The paper's claims (its §6) judged on a study's results: one small function per claim, in a table.

Each function reads the analysis (and, for the alignment claims, the evidence `xling
align-report` computed) and returns its checks as `Check`s plus the lines that explain them;
`verdicts` turns that into one `ClaimResult` per claim. `headline` is the demo's summary.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..analysis.efficiency import efficiency
from . import published
from .stats import diff_interval, fmt, fmt_interval, fmt_stat
from .summary import Analysis, Summary, find, under_form
from .verdict import NOT_COUNTED, NOT_TESTED, Check, Evidence, Status, combine, combine_checks, compare, vs_one


@dataclass
class ClaimResult:
    """One claim of the paper, judged: its status, the main effect and its 95 % interval, and the evidence."""

    claim: str  # "1", "2a", ... as in the paper's §6
    text: str  # the claim as the paper states it
    status: Status
    tests: list[Check] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    @property
    def effect(self) -> float:
        """The first check's effect (nan when the claim was not tested)."""
        return self.tests[0].effect if self.tests else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return self.tests[0].interval if self.tests else (math.nan, math.nan)


Judged = tuple[list[Check], list[str]]  # what a claim function returns: its checks and its evidence lines


# --------------------------------------------------------------------------- helpers


def _paper(v: published.Value | None, attr: str) -> str:
    value = published.cell(v, attr)
    return f" (paper: {value})" if value else ""


def _paper_teff(s: Summary) -> str:
    """The published TEff, and beside it ours under the paper's own law form where the verdict uses another
    (a published TEff is compared only with that form's)."""
    value = published.cell(s.paper, "teff")
    if not value:
        return ""
    ours = s.teff_forms.get("paper")
    same = ours is None or fmt_interval(ours) == fmt_interval(s.teff)
    return f" (paper: {value})" if same else f" (paper: {value}; ours under the paper's law form {fmt_interval(ours)})"


def _scales(summaries: list[Summary]) -> list[tuple[float, str]]:
    return sorted({(s.key.length, s.key.model) for s in summaries})


def _scale_name(length: float, model: str) -> str:
    return f"{model}, {length:g}x"


def _clone(summaries, role, **kw):
    return find(summaries, role, kind="clone", num_clones=1, frac_clone=1.0, schedule="", order="", **kw)


def _model_order(a: Analysis) -> list[str]:
    """Model presets from small to large, as the study lists them."""
    return list(dict.fromkeys(r.config["model"]["preset"] for r in a.study.runs))


def _beats_both(S: list[Summary], length: float, model: str) -> tuple[bool, str] | None:
    """Does 90/10 reach a lower PPL than 50/50 on both languages at this scale?"""
    parts, both = [], True
    for role in ("L1", "L2"):
        imb, bal = _clone(S, role, p=0.1, length=length, model=model), _clone(S, role, p=0.5, length=length, model=model)
        if not (imb and bal):
            return None
        status = compare(imb[0].ppl, bal[0].ppl, smaller=True).status
        both &= status is Status.SUPPORTED
        parts.append(f"{imb[0].label} PPL 90/10 {fmt_interval(imb[0].ppl)} vs 50/50 {fmt_interval(bal[0].ppl)} ({status})")
    return both, f"{_scale_name(length, model)}: " + "; ".join(parts) + f" — beats 50/50 on both: {'yes' if both else 'no'}."


def _alignment_lines(alignment: list[Evidence], claim: str) -> list[str]:
    """align-report's evidence lines for one claim, as detail lines of the claims table."""
    return [f"{e.line.rstrip('.')} ({'' if e.test else NOT_COUNTED + '; '}alignment section below)."
            for e in alignment if e.claim == claim]


def _from_alignment(claim: str, missing: str) -> Callable[[Analysis, list[Evidence]], Judged]:
    """A claim judged by align-report's checks (claims 3 and 8); `missing` says how to get them."""

    def judge(a: Analysis, alignment: list[Evidence]) -> Judged:
        mine = [e for e in alignment if e.claim == claim]
        if not mine:  # (align-report compares cloned 50/50 and 90/10 runs: a study without them never has these)
            clones = all(find(a.summaries, None, kind="clone", num_clones=1, p=p, schedule="") for p in (0.5, 0.1))
            return [], [missing if clones else "The study has no cloned 50/50 and 90/10 runs to compare."]
        return [e.test for e in mine if e.test], _alignment_lines(alignment, claim)

    return judge


# --------------------------------------------------------------------------- one function per claim


def claim_1(a: Analysis, alignment: list[Evidence]) -> Judged:
    """90/10: minority TEff > 1, majority ~ 1."""
    tests, lines = [], []
    for s in _clone(a.summaries, "L2", p=0.1):
        tests.append(vs_one(s.teff))
        maj = next(iter(_clone(a.summaries, "L1", p=0.1, length=s.key.length, model=s.key.model)), None)
        maj_text = (f"; majority {maj.label} TEff {fmt_interval(maj.teff)}{_paper_teff(maj)} (shown, not judged: "
                    "the paper sets no margin for near 1)" if maj else "")
        lines.append(f"{_scale_name(s.key.length, s.key.model)}: minority {s.label} TEff {fmt_interval(s.teff)}"
                     f"{_paper_teff(s)}: {tests[-1].status}{maj_text}.")
    return tests, lines


def claim_2a(a: Analysis, alignment: list[Evidence]) -> Judged:
    """Minority TEff falls as p grows (p <= 0.5)."""
    tests, lines = [], []
    for length, model in _scales(_clone(a.summaries, "L2")):
        by_p = [s for s in sorted(_clone(a.summaries, "L2", length=length, model=model), key=lambda s: s.key.p)
                if s.key.p <= 0.5]
        if len(by_p) >= 2:
            tests.append(compare(by_p[0].teff, by_p[-1].teff, smaller=False))
            monotone = all(x >= y for x, y in itertools.pairwise([s.teff.mean for s in by_p]))
            lines.append(f"{_scale_name(length, model)}: minority TEff at p = "
                         + ", ".join(f"{s.key.p:g}: {fmt_interval(s.teff)}" for s in by_p)
                         + f" ({'monotone' if monotone else 'not monotone'} in the means); lowest vs highest p: "
                           f"{tests[-1].status}.")
    return tests, lines


def claim_2b(a: Analysis, alignment: list[Evidence]) -> Judged:
    """50/50 TEff falls with training length, below 1 at the longest."""
    tests, lines = [], []
    for model in _model_order(a):
        half = sorted(_clone(a.summaries, "L2", p=0.5, model=model), key=lambda s: s.key.length)
        if len(half) >= 2:
            falls = compare(half[-1].teff, half[0].teff, smaller=True)
            below = vs_one(half[-1].teff, above=False)
            tests.append(combine_checks(falls, below))
            lines.append(f"{model}: 50/50 TEff by training length "
                         + ", ".join(f"{s.key.length:g}x: {fmt_interval(s.teff)}{_paper_teff(s)}" for s in half)
                         + f" — falls with training: {falls.status}; below 1 at the longest: {below.status}.")
        elif half:
            s = half[0]
            lines.append(f"{_scale_name(s.key.length, model)}: 50/50 TEff {fmt_interval(s.teff)}{_paper_teff(s)}"
                         " — one training length, so the trend is not tested (the paper: 1.09 at 0.4x, 0.89 at 1x, "
                         "0.64 at 3x).")
    return tests, lines


def claim_4(a: Analysis, alignment: list[Evidence]) -> Judged:
    """Scale (training length, model size) amplifies the 90/10 advantage until it beats 50/50 on both."""
    S, tests, lines = a.summaries, [], []
    axes = [("training length", m, sorted({s.key.length for s in _clone(S, "L2", p=0.1, model=m)}), None)
            for m in _model_order(a)]
    axes += [("model size", None, [m for m in _model_order(a) if _clone(S, "L2", p=0.1, model=m, length=length)], length)
             for length in sorted({s.key.length for s in _clone(S, "L2", p=0.1)})]
    for axis, model, steps, length in axes:
        if len(steps) < 2:
            continue
        scale = [(v, model) if model else (length, v) for v in steps]
        teffs = [_clone(S, "L2", p=0.1, length=sc[0], model=sc[1])[0].teff for sc in scale]
        grows = compare(teffs[-1], teffs[0], smaller=False)
        first, last = _beats_both(S, *scale[0]), _beats_both(S, *scale[-1])
        lines.append(f"By {axis} ({model or f'{length:g}x'}): minority TEff at 90/10 "
                     + ", ".join(f"{v}: {fmt_interval(t)}" for v, t in zip(steps, teffs)) + f" — grows: {grows.status}.")
        lines.extend(x[1] for x in (first, last) if x)
        if grows.status is Status.NOT_TESTED or last is None:  # no TEff (no ladder), or no 50/50 to beat
            tests.append(NOT_TESTED)
            continue
        wins = Check(Status.SUPPORTED if last[0] else Status.NOT_SUPPORTED)  # significantly, on both languages
        tests.append(combine_checks(grows, wins))
    if not tests:
        for length, model in _scales(_clone(S, "L2", p=0.1)):
            one = _beats_both(S, length, model)
            if one:
                lines.append(one[1] + " One scale only, so the trend is not tested (the paper sees the win only "
                             "with enough scale: at GPT-small 1x EN2 is still worse at 90/10, 32.81 vs 26.14).")
    return tests, lines


def _schedule_claim(claim: str, schedule: str) -> Callable[[Analysis, list[Evidence]], Judged]:
    """5a (curriculum 0.1_0.9 beats static 50/50) and 5b (a hard switch 0.0_1.0 forgets EN1)."""

    def judge(a: Analysis, alignment: list[Evidence]) -> Judged:
        tests, lines = [], []
        for c in find(a.summaries, None, kind="clone", schedule=schedule, num_clones=1):
            bal = _clone(a.summaries, c.role, p=0.5, length=c.key.length, model=c.key.model)
            if not bal or (claim == "5b" and c.role != "L1"):
                continue
            tests.append(compare(c.ppl, bal[0].ppl, smaller=claim == "5a"))
            lines.append(f"{_scale_name(c.key.length, c.key.model)}: {c.label} PPL with schedule {schedule} "
                         f"{fmt_interval(c.ppl)}{_paper(c.paper, 'ppl')} vs static 50/50 {fmt_interval(bal[0].ppl)}"
                         f"{_paper(bal[0].paper, 'ppl')}: {tests[-1].status}.")
        return tests, lines

    return judge


def claim_6(a: Analysis, alignment: list[Evidence]) -> Judged:
    """Ten equal languages each get TEff > 1."""
    tests, lines = [], []
    for s in find(a.summaries, None, kind="clone", num_clones=9, p=0.9, schedule=""):
        tests.append(vs_one(s.teff))
        lines.append(f"{_scale_name(s.key.length, s.key.model)}: {s.label} TEff {fmt_interval(s.teff)}"
                     f"{_paper_teff(s)}: {tests[-1].status}.")
    return tests, lines


def claim_7(a: Analysis, alignment: list[Evidence]) -> Judged:
    """Anchors (frac_clone < 1) improve 50/50."""
    tests, lines = [], []
    for s in find(a.summaries, None, kind="clone", num_clones=1, p=0.5, schedule=""):
        full = find(a.summaries, s.role, kind="clone", num_clones=1, p=0.5, schedule="", frac_clone=1.0,
                    length=s.key.length, model=s.key.model)
        if s.key.frac_clone < 1 and full:
            tests.append(compare(s.ppl, full[0].ppl, smaller=True))
            lines.append(f"{_scale_name(s.key.length, s.key.model)}: {s.label}, {1 - s.key.frac_clone:.0%} of the "
                         f"vocabulary shared: PPL {fmt_interval(s.ppl)} vs "
                         f"none shared {fmt_interval(full[0].ppl)}: {tests[-1].status}.")
    return tests, lines


def claim_9(a: Analysis, alignment: list[Evidence]) -> Judged:
    """Real languages: the minority gains, more with anchors; the alignment half is shown, not judged."""
    S, tests, lines = a.summaries, [], []
    for p, role in ((0.1, "L2"), (0.9, "L1")):
        for s in find(S, role, kind="real", p=p, schedule=""):
            tests.append(vs_one(s.teff))
            lines.append(f"{_scale_name(s.key.length, s.key.model)}, {s.key.vocab} vocabulary, minority {s.label} at "
                         f"{min(p, 1 - p):.0%}: TEff {fmt_interval(s.teff)}{_paper_teff(s)}: {tests[-1].status}.")
        for s in find(S, role, kind="real", p=p, vocab="anchored", schedule=""):
            disj = find(S, role, kind="real", p=p, vocab="disjoint", schedule="", length=s.key.length, model=s.key.model)
            if disj:  # the claim's second half: anchors add to the gain
                tests.append(compare(s.teff, disj[0].teff, smaller=False))
                lines.append(f"{_scale_name(s.key.length, s.key.model)}: anchored vs disjoint minority TEff "
                             f"{fmt_interval(s.teff)} vs {fmt_interval(disj[0].teff)}: {tests[-1].status}.")
    if lines:  # the paper finds the EN/FR alignment change inconclusive: shown, not judged
        lines += _alignment_lines(alignment, "9") or [
            "The alignment half of this claim needs the alignment analyses: run `xling align-report` on this study."]
    return tests, lines


@dataclass(frozen=True)
class Claim:
    id: str
    text: str  # as the paper's §6 states it
    judge: Callable[[Analysis, list[Evidence]], Judged]


CLAIMS: tuple[Claim, ...] = (
    Claim("1", "At 90/10 the minority language has TEff well above 1; the majority stays near 1.", claim_1),
    Claim("2a", "Minority TEff grows as p(EN2) falls.", claim_2a),
    Claim("2b", "At 50/50, TEff falls below 1 as training gets longer.", claim_2b),
    Claim("3", "Hidden-state, gradient and embedding similarity are higher at 90/10 than at 50/50.",
          _from_alignment("3", "Needs the alignment analyses: run `xling align-report` on this study; its results "
                               "then appear in the alignment section below.")),
    Claim("4", "More scale (longer training, larger model) amplifies the 90/10 advantage until it beats 50/50 on both "
               "languages.", claim_4),
    Claim("5a", "A 50/50-on-average curriculum (0.1_0.9) beats static 50/50 on both languages with enough training.",
          _schedule_claim("5a", "0.1_0.9")),
    Claim("5b", "A hard switch (0.0_1.0) forgets EN1.", _schedule_claim("5b", "0.0_1.0")),
    Claim("6", "Ten equal clones each get TEff > 1.", claim_6),
    Claim("7", "Shared anchor tokens improve a 50/50 model.", claim_7),
    Claim("8", "Fine-tuned skills transfer zero-shot to EN2 better when pretraining was imbalanced.",
          _from_alignment("8", "Needs the transfer (fine-tuning) analysis: run `xling align-report` on this study; "
                               "its results then appear in the alignment section below.")),
    Claim("9", "Real languages: the minority gains (more with an anchored vocabulary); alignment change inconclusive.",
          claim_9),
)


def verdicts(a: Analysis, alignment: list[Evidence] | None = None) -> list[ClaimResult]:
    """Each claim judged by the seed intervals; `alignment`: align-report's evidence (default: the analysis's)."""
    alignment = a.alignment if alignment is None else alignment
    results = []
    for claim in CLAIMS:
        tests, evidence = claim.judge(a, alignment or [])
        results.append(ClaimResult(claim.id, claim.text, combine([t.status for t in tests]), tests, evidence))
    return results


def claim_lines(a: Analysis) -> list[str]:
    """The demo's verdict lines: each claim tested, its status under the verdicts' law form and, where it differs, the
    paper's; for a claim mixed by align-report's checks, the checks that go against the paper, and for one partly
    supported, those that do not support it (the lines before these show only the hidden states')."""
    paper_form = verdicts(under_form(a, "paper")) if a.laws else []
    lines = []
    for i, v in enumerate(verdicts(a)):
        if v.status is Status.NOT_TESTED:
            continue
        other = paper_form[i].status if paper_form else v.status
        lines.append(f"claim {v.claim}: {v.status}" + (f" (with the paper's law form: {other})" if other != v.status
                                                       else ""))
        counted = [e for e in a.alignment if e.claim == v.claim and e.test]
        against = [e.line for e in counted if e.test.status is Status.CONTRADICTED]
        if v.status is Status.MIXED and against:
            lines.append(f"  against the paper: {'; '.join(against)}")
        unsupported = [e.line for e in counted if e.test.status is not Status.SUPPORTED]
        if v.status is Status.PARTLY and unsupported:
            lines.append(f"  its other checks: {'; '.join(unsupported)}")
    return lines


# --------------------------------------------------------------------------- the headline


def headline(a: Analysis) -> list[str]:
    """The demo's key lines: the second language's TEff at 90/10 (the minority) and 50/50 next to the paper's, and
    whether the direction holds."""
    order = _model_order(a)
    pairs = []
    for p in (0.1, 0.5):
        found = _clone(a.summaries, "L2", p=p)
        if found:  # the setting closest to the paper's 1x GPT-small (Table 1), else the smallest model
            pairs.append(min(found, key=lambda s: (abs(math.log(s.key.length)), s.paper_model != "small",
                                                   order.index(s.key.model))))
    lines = [_headline_line(a, s) for s in pairs]
    if len(pairs) == 2:
        low, high = pairs
        d, lo, hi = diff_interval(low.teff, high.teff)
        holds = low.teff.mean > high.teff.mean and low.teff.mean > 1
        seeds = min(low.teff.n, high.teff.n)
        one_seed = seeds < 2  # no interval, so nothing was tested
        if seeds == 0:
            word = "is not tested (no TEff: the study has no monolingual ladder)"
        elif one_seed:
            word = (f"{'holds' if holds else 'does not hold'} in the means (not tested: "
                    f"{'one seed' if max(low.teff.n, high.teff.n) < 2 else 'a setting has one seed'}, no interval)")
        elif holds and vs_one(low.teff).status is Status.SUPPORTED and lo > 0:
            word = "HOLDS"
        elif holds:
            word = "holds in the means but is NOT significant"
        else:
            word = "does NOT hold"
        interval = "" if one_seed else f" [{fmt(lo)}, {fmt(hi)}]"
        lines.append(f"The paper's direction (a rare language learns more per token: TEff at 90/10 above 1 and above "
                     f"TEff at 50/50) {word} at this scale ({_scale_name(low.key.length, low.key.model)}): "
                     f"difference {fmt(d)}{interval}.")
        ours = high.teff_forms.get("paper")  # compared with the published value: under the paper's law form
        if high.paper and high.paper.teff and high.paper.teff < 1 and ours and ours.n >= 2 and ours.lo > 1:
            lines.append("Unlike the paper's GPT-small at 1x, our 50/50 TEff (paper's law form) is above 1 over seeds; "
                         "the paper finds 50/50 TEff "
                         "above 1 early in training (1.09 at 0.4x) and falling below 1 with more training, and this "
                         "CPU model is far smaller and sees about a thousandth of the paper's tokens.")
        lines.append("TEff credits each language with its expected share of the tokens (p/k for each of k clones, "
                     "1 − p for the base language), as the paper does; with "
                     "the shares the sampled sequences actually had: " + ", ".join(
                         f"{'90/10' if s.key.p == 0.1 else '50/50'} {fmt_stat(s.teff_sampled)}" for s in pairs) + ".")
    return lines


def _setting_and_role(s: Summary) -> str:
    """'90/10: minority' or '50/50: second language' (no minority at equal shares)."""
    return "90/10: minority" if s.key.p == 0.1 else "50/50: second language"  # (`headline` passes these two)


def _headline_line(a: Analysis, s: Summary) -> str:
    """The paper-form TEff beside the paper's value, the loss form's, and which one the verdicts use."""
    if s.law not in a.laws:  # no monolingual ladder of >= 3 fractions: no law, so no TEff to report
        return (f"{_setting_and_role(s)} {s.label}: no TEff (the study has no monolingual "
                "ladder of at least 3 data fractions with this run's config outside the mixture to fit a law to)")
    verdict = a.verdict_form.get(s.law, "loss")
    loo = a.loo.get(s.law, {})
    why = ("lower leave-one-out error on the ladder" if any(math.isfinite(v) for v in loo.values()) else
           "the default: leave-one-out needs a ladder of at least 4 fractions")
    seeds = (f"95% CI over {s.teff.n} seeds [{fmt(s.teff.lo)}, {fmt(s.teff.hi)}]" if s.teff.n >= 2 else
             "one seed, no interval")
    paper_law = a.laws_by_form["paper"][s.law].law
    loose = ", so the comparison with the paper's number is loose" if s.paper else ""
    caveats = [("this ladder's best fit in the paper's form (a, b, c ≥ 0: 1/PPL rising towards c) has its "
                f"exponent at the lower bound, b → 0, i.e. 1/PPL linear in ln x: a degenerate fit{loose}")
               if paper_law.exponent_at_bound == "lower" else
               f"this ladder's best fit in the paper's form has its exponent at the {paper_law.exponent_at_bound} "
               f"bound{loose}" if paper_law.exponent_at_bound else "", _one_point_out(a, s)]
    caveat = f" ({'; '.join(c for c in caveats if c)})" if any(caveats) else ""
    return (f"{_setting_and_role(s)} {s.label} TEff {fmt_stat(s.teff_forms['paper'])} "
            f"under the paper's law form{_paper(s.paper, 'teff')}{caveat}, "
            f"{fmt_stat(s.teff_forms['loss'])} under "
            f"the loss form; the verdicts use the {verdict} form ({why}): {seeds}{_law_interval(a, s)}")


def _one_point_out(a: Analysis, s: Summary) -> str:
    """How far one ladder point moves the paper-form TEff, which is what is set beside the published one: the
    law refitted without each point in turn, at the setting's mean PPL (none for a 3-point ladder)."""
    refits = a.loo_laws[s.law]["paper"]
    if not refits or not math.isfinite(s.ppl.mean):
        return ""
    moved = [law.fraction_for(s.ppl.mean) / s.fraction for _, law in refits]
    whole = a.laws_by_form["paper"][s.law].law.fraction_for(s.ppl.mean) / s.fraction
    return (f"with one of the ladder's {len(a.ladder_points[s.law][0])} points left out, its TEff at the mean PPL, {fmt(whole)}, "
            f"moves to {fmt(min(moved))}-{fmt(max(moved))}")


def _law_interval(a: Analysis, s: Summary) -> str:
    """The law's own uncertainty for the TEff at the mean PPL, as extra honesty: the bootstrap's percentiles
    and the profile-likelihood interval, the better calibrated of the two in simulations of short ladders
    (README)."""
    fit = a.laws.get(s.law) if s.law else None
    if fit is None or not math.isfinite(s.ppl.mean):
        return ""
    e = efficiency(fit, s.fraction, s.ppl.mean, profile=True)
    ranges = [] if math.isnan(e.teff_profile[0]) else [
        f"[{fmt(e.teff_profile[0])}, {fmt(e.teff_profile[1])}] (profile likelihood, F with n-3 dof)"]
    if fit.bootstrap_laws:
        ranges.append(f"[{fmt(e.teff_ci[0])}, {fmt(e.teff_ci[1])}] (bootstrap percentiles)")
    return f"; TEff at the mean PPL {fmt(e.teff)}, ladder-fit ranges {', '.join(ranges)}" if ranges else ""
