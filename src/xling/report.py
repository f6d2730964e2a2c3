"""`xling report STUDY`: tables, figures and a plain-language verdict from the results store.

Pipeline: the study's runs (store rows) -> monolingual laws from the ladder runs (one per law
group and language; clones use the base language's law) -> MLPE / MLTE / TEff of every language
of every bilingual run (``xling.efficiency``) -> mean and 95 % t-interval over seeds per setting
-> Markdown + self-contained HTML (inline CSS, PNG figures next to it), with the paper's
published value beside ours wherever one exists (``xling.published``).
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import published
from .config import from_dict, language_names
from .efficiency import ScalingFit, efficiency, fit_languages
from .errors import XlingError
from .fsio import atomic_write_text
from .study import SEED_KEY, RunSpec, Study, runs_root

# Config keys that describe the *mixture* of a run, not the monolingual setting its law belongs to.
MIXTURE_KEYS = ("name", "languages.p", "languages.schedule", "languages.num_clones", "languages.frac_clone",
                "languages.names", "train.seed", "train.data_fraction", "train.steps")
BOOTSTRAP = 500  # resamples for the law's own uncertainty (shown for the headline numbers)


def dotted(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


# --------------------------------------------------------------------------- statistics


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
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = v.size
    if n == 0:
        return Stat(math.nan, math.nan, math.nan, 0)
    if not np.all(np.isfinite(v)):
        return Stat(math.inf, math.nan, math.nan, n, tuple(v))
    mean = float(v.mean())
    if n == 1:
        return Stat(mean, mean, mean, 1, tuple(v))
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
    from scipy import stats

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
    h = float(stats.t.ppf(0.975, df) * se)
    return d, d - h, d + h


def fmt(x: float | None, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return "inf" if math.isinf(x) else format(x, spec)


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


# --------------------------------------------------------------------------- analysis


@dataclass
class Row:
    """One language of one completed run."""

    spec: RunSpec
    language: str
    label: str  # display label: clones beyond the first are pooled (EN2–EN10) so ten languages stay readable
    law_language: str  # whose monolingual law applies: the base language for clones, else itself
    role: str  # L1 = base language, L2 = any other
    mono: bool
    fraction: float  # training tokens of this language / the reference budget T
    length: float  # the run's total training, in units of the study's 1x
    ppl: float
    law: tuple[str, str] | None = None  # (law group, law language)
    mlpe: float = math.nan
    mlte: float = math.nan
    teff: float = math.nan
    warnings: list[str] = field(default_factory=list)


@dataclass
class Summary:
    """One setting (grid values without the seed) and one language label, aggregated over seeds."""

    setting: str
    group: str
    label: str  # language label (clones beyond the first are pooled, e.g. EN2–EN10)
    role: str
    key: published.Setting  # our setting in the paper's terms (model = our preset)
    paper_model: str  # the paper's model this preset stands for
    spec: RunSpec  # a representative run
    fraction: float
    ppl: Stat
    mlpe: float
    teff: Stat
    paper: published.Value | None
    warnings: list[str]
    law: tuple[str, str] | None  # the monolingual law used for TEff


@dataclass
class Analysis:
    study: Study
    rows: list[Row]
    laws: dict[tuple[str, str], ScalingFit]
    summaries: list[Summary]  # bilingual settings
    ladder: list[Summary]  # monolingual settings
    missing: list[str]  # run ids without results
    failed: list[str]
    repeated: list[tuple[str, str, float]]  # (run, language, passes) with passes > 1
    max_epochs: float
    notes: list[str]

    def law_name(self, key: tuple[str, str]) -> str:
        """'EN1' or, when the study has several law groups, 'EN1 (preset=cpu-s)': what tells them apart."""
        groups = [json.loads(g) for g in dict.fromkeys(k[0] for k in self.laws)]
        differ = [k for k in groups[0] if len({json.dumps(g.get(k)) for g in groups}) > 1]
        mine = json.loads(key[0])
        values = ", ".join(f"{k.split('.')[-1]}={mine.get(k)}" for k in differ)
        return f"{key[1]} ({values})" if values else key[1]


def is_mono(config: dict) -> bool:
    lang = config["languages"]
    two = lang["kind"] == "real" or lang["num_clones"] == 1
    return not lang["schedule"] and (lang["p"] == 0 or (lang["p"] == 1 and two))


def law_group(config: dict) -> str:
    """Runs whose configs agree outside the mixture keys share monolingual laws.

    Disjoint and anchored vocabularies tokenize each language identically, so their monolingual
    runs are the same experiment (the paper fits one EN and one FR law for both).
    """
    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif f"{prefix}{k}" not in MIXTURE_KEYS:
                flat[f"{prefix}{k}"] = v

    walk(config)
    if flat.get("languages.vocab") in ("disjoint", "anchored"):
        flat["languages.vocab"] = "separate"
    if flat.get("languages.kind") == "clone":
        flat.pop("languages.vocab", None)
        flat.pop("languages.second.translation", None)
    return json.dumps(flat, sort_keys=True)


def paper_setting(study: Study, spec: RunSpec, length: float, mono: bool) -> published.Setting:
    lang, preset = spec.config["languages"], spec.config["model"]["preset"]
    model = study.paper_models.get(preset, preset if preset in published.PAPER_MODELS else "small")
    p = lang["p"]
    if lang["schedule"]:
        stages = [float(s) for s in str(lang["schedule"]).split("_")]
        p = sum(stages) / len(stages)
    if mono:  # a joint tokenizer cuts text differently: the paper's monolingual numbers do not apply
        vocab = "joint" if lang["kind"] == "real" and lang["vocab"] == "joint" else ""
        return published.Setting(lang["kind"], p, "", 1, 1.0, vocab, round(length, 3), model)
    vocab = lang["vocab"] if lang["kind"] == "real" else ""
    return published.Setting(lang["kind"], p, str(lang["schedule"]), lang["num_clones"], lang["frac_clone"], vocab,
                             round(length, 3), model)


def our_setting(study: Study, spec: RunSpec, length: float, mono: bool) -> published.Setting:
    """The same fields with our own model preset: what claims compare across."""
    s = paper_setting(study, spec, length, mono)
    return published.Setting(s.kind, s.p, s.schedule, s.num_clones, s.frac_clone, s.vocab, s.length,
                             spec.config["model"]["preset"])


def analyse(study: Study, runs: list[dict], evals: list[dict]) -> Analysis:
    """Everything the report shows, from the store's rows of this study."""
    by_id = {r["name"]: r for r in runs}
    eval_by_run: dict[str, list[dict]] = {}
    for e in evals:
        eval_by_run.setdefault(e["run_id"].split("/", 1)[-1], []).append(e)
    rows, missing, failed, repeated, max_epochs = [], [], [], [], 0.0
    for spec in study.runs:
        run = by_id.get(spec.id)
        if run is None or run["status"] != "completed" or spec.id not in eval_by_run:
            (failed if run and run["status"] == "failed" else missing).append(spec.id)
            continue
        for lang, passes in json.loads(run["data_epochs"] or "{}").items():
            max_epochs = max(max_epochs, passes)
            if passes > 1.0 + 1e-9:
                repeated.append((spec.id, lang, passes))
        cfg = spec.config
        tokens_total = run["steps"] * cfg["train"]["batch_size"] * cfg["model"]["seq_len"]
        length = tokens_total / run["budget_tokens"] / study.one_x
        mono = is_mono(cfg)
        names = language_names(from_dict(cfg))
        clone, k = cfg["languages"]["kind"] == "clone", cfg["languages"]["num_clones"]
        for e in sorted(eval_by_run[spec.id], key=lambda e: names.index(e["language"])):
            if not e["tokens_trained"]:
                continue  # never trained on (the other language of a monolingual run)
            role = "L1" if e["language"] == names[0] else "L2"
            label = f"{names[1]}–{names[-1]}" if clone and k > 1 and role == "L2" else e["language"]
            rows.append(Row(spec, e["language"], label, names[0] if clone else e["language"], role, mono,
                            e["fraction"], length, e["ppl"]))
    laws: dict[tuple[str, str], ScalingFit] = {}
    _fit_and_score(rows, laws)
    bilingual = _summaries(study, [r for r in rows if not r.mono], mono=False)
    ladder = _summaries(study, [r for r in rows if r.mono], mono=True)
    a = Analysis(study, rows, laws, bilingual, ladder, missing, failed, repeated, max_epochs, [])
    a.notes = [f"{a.law_name(key)}: {n}" for key, fit in laws.items() for n in fit.notes]
    return a


def _fit_and_score(rows: list[Row], laws: dict) -> None:
    mono_by_group: dict[str, list[dict]] = {}
    for r in rows:
        if r.mono:
            mono_by_group.setdefault(law_group(r.spec.config), []).append(
                {"language": r.law_language, "fraction": r.fraction, "ppl": r.ppl})
    for group, mono_rows in mono_by_group.items():
        by_lang: dict[str, list[dict]] = {}
        for m in mono_rows:
            by_lang.setdefault(m["language"], []).append(m)
        for lang, pts in by_lang.items():
            if len({p["fraction"] for p in pts}) >= 3:
                laws[(group, lang)] = fit_languages(pts, bootstrap=BOOTSTRAP)[lang]
    for r in rows:
        key = (law_group(r.spec.config), r.law_language)
        if key in laws and r.fraction and r.ppl:
            e = efficiency(laws[key], r.fraction, r.ppl)
            r.law, r.mlpe, r.mlte, r.teff, r.warnings = key, e.mlpe, e.mlte, e.teff, e.warnings


def _summaries(study: Study, rows: list[Row], mono: bool) -> list[Summary]:
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.spec.setting, r.label), []).append(r)
    out = []
    for (setting, label), members in groups.items():
        per_run: dict[str, list[Row]] = {}
        for r in members:
            per_run.setdefault(r.spec.id, []).append(r)
        runs = list(per_run.values())  # pooled clones: average within a run first, then over seeds
        mean = lambda rs, a: float(np.mean([getattr(r, a) for r in rs]))
        first = members[0]
        length = float(np.mean([r.length for r in members]))
        if not mono:  # steps are rounded to whole batches: snap to the 1/20 grid the paper's lengths sit on
            length = round(length * 20) / 20
        warnings = sorted({w for r in members for w in r.warnings})
        paper_key = paper_setting(study, first.spec, first.fraction / study.one_x if mono else length, mono)
        key = our_setting(study, first.spec, first.fraction / study.one_x if mono else length, mono)
        out.append(Summary(setting, first.spec.group, label, first.role, key, paper_key.model, first.spec,
                           float(np.mean([mean(rs, "fraction") for rs in runs])),
                           log_stat([mean(rs, "ppl") for rs in runs]),
                           float(np.mean([mean(rs, "mlpe") for rs in runs])),
                           t_stat([mean(rs, "teff") for rs in runs]),
                           published.lookup(paper_key, first.role), warnings, first.law))
    return out


def find(summaries: list[Summary], role: str | None = None, **attrs) -> list[Summary]:
    """Summaries whose setting (in our terms) matches every given attribute (floats approximately)."""
    out = []
    for s in summaries:
        if role and s.role != role:
            continue
        ok = True
        for k, v in attrs.items():
            have = getattr(s.key, k)
            ok &= abs(have - v) < 1e-9 if isinstance(v, float) else have == v
        if ok:
            out.append(s)
    return out


# --------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    claim: str  # "1", "2a", ... as in PAPER.md §6
    text: str  # the claim as PAPER.md §6 states it
    status: str  # supported | direction holds, not significant | not supported | contradicted | partly | not tested
    detail: list[str]


CLAIMS = {
    "1": "At 90/10 the minority language has TEff well above 1; the majority stays near 1.",
    "2a": "Minority TEff grows as p(EN2) falls.",
    "2b": "At 50/50, TEff falls below 1 as training gets longer.",
    "3": "Hidden-state, gradient and embedding similarity are higher at 90/10 than at 50/50.",
    "4": "More scale (longer training, larger model) amplifies the 90/10 advantage until it beats 50/50 on both "
         "languages.",
    "5a": "A 50/50-on-average curriculum (0.1_0.9) beats static 50/50 on both languages with enough training.",
    "5b": "A hard switch (0.0_1.0) forgets EN1.",
    "6": "Ten equal clones each get TEff > 1.",
    "7": "Shared anchor tokens improve a 50/50 model.",
    "8": "Fine-tuned skills transfer zero-shot to EN2 better when pretraining was imbalanced.",
    "9": "Real languages: the minority gains (more with an anchored vocabulary); alignment change inconclusive.",
}


def _vs_one(s: Stat, above: bool = True) -> str:
    """Is the value above 1 (or below 1 with above=False), judged by its seed interval?"""
    if s.n == 0:
        return "not tested"  # no monolingual ladder, so no TEff
    sign = 1 if above else -1
    holds = sign * (s.mean - 1) > 0
    if s.n < 2 or math.isnan(s.lo):
        return "direction holds (one seed, no interval)" if holds else "not supported (one seed)"
    lo, hi = sorted((sign * (s.lo - 1), sign * (s.hi - 1)))
    if lo > 0:
        return "supported"
    return "direction holds, not significant" if holds else ("contradicted" if hi < 0 else "not supported")


def _above_one(s: Stat) -> str:
    return _vs_one(s, above=True)


def _compare(a: Stat, b: Stat, smaller: bool) -> str:
    """Is a < b (smaller=True) or a > b, judged by the Welch interval of a - b."""
    d, lo, hi = diff_interval(a, b)
    sign = -1 if smaller else 1
    if math.isnan(d):
        return "not tested"
    if math.isnan(lo):
        return "direction holds (one seed, no interval)" if sign * d > 0 else "not supported (one seed)"
    if sign * lo > 0 and sign * hi > 0:
        return "supported"
    if sign * d > 0:
        return "direction holds, not significant"
    return "contradicted" if (sign * lo < 0 and sign * hi < 0) else "not supported"


def _combine(statuses: list[str]) -> str:
    statuses = [s for s in statuses if s != "not tested"]
    if not statuses:
        return "not tested"
    if all(s == statuses[0] for s in statuses):
        return statuses[0]
    if any(s.startswith(("supported", "direction")) for s in statuses):
        return "partly"
    return "not supported"


def _paper(v: published.Value | None, attr: str) -> str:
    if v is None or getattr(v, attr) is None:
        return ""
    return f" (paper: {'≈' if v.approx else ''}{getattr(v, attr):.2f})"


def _scales(summaries: list[Summary]) -> list[tuple[float, str]]:
    return sorted({(s.key.length, s.key.model) for s in summaries})


def _scale_name(length: float, model: str) -> str:
    return f"{model}, {length:g}x"


def _clone(summaries, role, **kw):
    return find(summaries, role, kind="clone", num_clones=1, frac_clone=1.0, schedule="", **kw)


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
        status = _compare(imb[0].ppl, bal[0].ppl, smaller=True)
        both &= status == "supported"
        parts.append(f"{imb[0].label} PPL 90/10 {fmt_interval(imb[0].ppl)} vs 50/50 {fmt_interval(bal[0].ppl)} ({status})")
    return both, f"{_scale_name(length, model)}: " + "; ".join(parts) + f" — beats 50/50 on both: {'yes' if both else 'no'}."


def _alignment_verdict(claim: str, alignment: list | None, missing: str) -> Verdict:
    from .report_alignment import claim_status

    mine = [(line, answer) for c, line, answer in alignment or [] if c == claim]
    if not mine:
        return Verdict(claim, CLAIMS[claim], "not tested", [missing])
    status = _combine([claim_status(answer) for _, answer in mine if answer])
    return Verdict(claim, CLAIMS[claim], status, _alignment_lines(alignment, claim))


def _alignment_lines(alignment: list | None, claim: str) -> list[str]:
    """align-report's verdict lines for one claim, as detail lines of the claims table."""
    return [f"{line} (alignment section below)." for c, line, _ in alignment or [] if c == claim]


def verdicts(a: Analysis, alignment: list | None = None) -> list[Verdict]:
    """Each claim of PAPER.md §6 that the study's settings can test, judged by the seed intervals.

    `alignment`: the (claim, line, answer) verdicts of `xling align-report`, where computed; they
    decide claims 3 and 8."""
    S = a.summaries
    out = []

    statuses, lines = [], []  # 1: 90/10 minority TEff > 1, majority ~ 1
    for s in _clone(S, "L2", p=0.1):
        statuses.append(_above_one(s.teff))
        maj = next(iter(_clone(S, "L1", p=0.1, length=s.key.length, model=s.key.model)), None)
        maj_text = f"; majority {maj.label} TEff {fmt_interval(maj.teff)}{_paper(maj.paper, 'teff')}" if maj else ""
        lines.append(f"{_scale_name(s.key.length, s.key.model)}: minority {s.label} TEff {fmt_interval(s.teff)}"
                     f"{_paper(s.paper, 'teff')}: {statuses[-1]}{maj_text}.")
    out.append(Verdict("1", CLAIMS["1"], _combine(statuses), lines))

    statuses, lines = [], []  # 2a: minority TEff falls as p grows (p <= 0.5)
    for length, model in _scales(_clone(S, "L2")):
        by_p = [s for s in sorted(_clone(S, "L2", length=length, model=model), key=lambda s: s.key.p) if s.key.p <= 0.5]
        if len(by_p) >= 2:
            statuses.append(_compare(by_p[0].teff, by_p[-1].teff, smaller=False))
            means = [s.teff.mean for s in by_p]
            monotone = all(x >= y for x, y in itertools.pairwise(means))
            lines.append(f"{_scale_name(length, model)}: minority TEff at p = "
                         + ", ".join(f"{s.key.p:g}: {fmt_interval(s.teff)}" for s in by_p)
                         + f" ({'monotone' if monotone else 'not monotone'} in the means); lowest vs highest p: "
                           f"{statuses[-1]}.")
    out.append(Verdict("2a", CLAIMS["2a"], _combine(statuses), lines))

    statuses, lines = [], []  # 2b: 50/50 TEff falls with training length, below 1 at the longest
    for model in _model_order(a):
        half = sorted(_clone(S, "L2", p=0.5, model=model), key=lambda s: s.key.length)
        if len(half) >= 2:
            falls = _compare(half[-1].teff, half[0].teff, smaller=True)
            below = _vs_one(half[-1].teff, above=False)
            statuses.append(falls if falls == below else "partly")
            lines.append(f"{model}: 50/50 TEff by training length "
                         + ", ".join(f"{s.key.length:g}x: {fmt_interval(s.teff)}{_paper(s.paper, 'teff')}" for s in half)
                         + f" — falls with training: {falls}; below 1 at the longest: {below}.")
        elif half:
            s = half[0]
            lines.append(f"{_scale_name(s.key.length, model)}: 50/50 TEff {fmt_interval(s.teff)}{_paper(s.paper, 'teff')}"
                         " — one training length, so the trend is not tested (the paper: 1.09 at 0.4x, 0.89 at 1x, "
                         "0.64 at 3x).")
    out.append(Verdict("2b", CLAIMS["2b"], _combine(statuses), lines))

    out.append(_alignment_verdict("3", alignment, "Needs the alignment analyses: run `xling align-report` on this study; its results then appear in the alignment section below."))

    statuses, lines = [], []  # 4: scale amplifies the 90/10 advantage until it beats 50/50 on both
    axes = [("training length", m, sorted({s.key.length for s in _clone(S, "L2", p=0.1, model=m)}), None)
            for m in _model_order(a)]
    axes += [("model size", None, [m for m in _model_order(a) if _clone(S, "L2", p=0.1, model=m, length=length)], length)
             for length in sorted({s.key.length for s in _clone(S, "L2", p=0.1)})]
    for axis, model, steps, length in axes:
        if len(steps) < 2:
            continue
        scale = [(v, model) if model else (length, v) for v in steps]
        teffs = [_clone(S, "L2", p=0.1, length=sc[0], model=sc[1])[0].teff for sc in scale]
        grows = _compare(teffs[-1], teffs[0], smaller=False)
        first, last = _beats_both(S, *scale[0]), _beats_both(S, *scale[-1])
        lines.append(f"By {axis} ({model or f'{length:g}x'}): minority TEff at 90/10 "
                     + ", ".join(f"{v}: {fmt_interval(t)}" for v, t in zip(steps, teffs)) + f" — grows: {grows}.")
        lines.extend(x[1] for x in (first, last) if x)
        wins = bool(last and last[0])
        statuses.append("supported" if wins and grows == "supported" else
                        "partly" if wins or grows in ("supported", "direction holds, not significant") else "not supported")
    if not statuses:
        for length, model in _scales(_clone(S, "L2", p=0.1)):
            one = _beats_both(S, length, model)
            if one:
                lines.append(one[1] + " One scale only, so the trend is not tested (the paper sees the win only "
                             "with enough scale: at GPT-small 1x EN2 is still worse at 90/10, 32.81 vs 26.14).")
    out.append(Verdict("4", CLAIMS["4"], _combine(statuses), lines))

    for claim, sched in (("5a", "0.1_0.9"), ("5b", "0.0_1.0")):  # 5: curriculum / hard switch vs static 50/50
        statuses, lines = [], []
        for c in find(S, None, kind="clone", schedule=sched, num_clones=1):
            bal = _clone(S, c.role, p=0.5, length=c.key.length, model=c.key.model)
            if not bal or (claim == "5b" and c.role != "L1"):
                continue
            statuses.append(_compare(c.ppl, bal[0].ppl, smaller=claim == "5a"))
            lines.append(f"{_scale_name(c.key.length, c.key.model)}: {c.label} PPL with schedule {sched} "
                         f"{fmt_interval(c.ppl)}{_paper(c.paper, 'ppl')} vs static 50/50 {fmt_interval(bal[0].ppl)}"
                         f"{_paper(bal[0].paper, 'ppl')}: {statuses[-1]}.")
        out.append(Verdict(claim, CLAIMS[claim], _combine(statuses), lines))

    statuses, lines = [], []  # 6: ten equal languages each TEff > 1
    for s in find(S, None, kind="clone", num_clones=9, p=0.9, schedule=""):
        statuses.append(_above_one(s.teff))
        lines.append(f"{_scale_name(s.key.length, s.key.model)}: {s.label} TEff {fmt_interval(s.teff)}"
                     f"{_paper(s.paper, 'teff')}: {statuses[-1]}.")
    out.append(Verdict("6", CLAIMS["6"], _combine(statuses), lines))

    statuses, lines = [], []  # 7: anchors (frac_clone < 1) improve 50/50
    for s in find(S, None, kind="clone", num_clones=1, p=0.5, schedule=""):
        full = find(S, s.role, kind="clone", num_clones=1, p=0.5, schedule="", frac_clone=1.0, length=s.key.length,
                    model=s.key.model)
        if s.key.frac_clone < 1 and full:
            statuses.append(_compare(s.ppl, full[0].ppl, smaller=True))
            lines.append(f"{_scale_name(s.key.length, s.key.model)}: {s.label}, {1 - s.key.frac_clone:.0%} of the "
                         f"vocabulary shared: PPL {fmt_interval(s.ppl)} vs "
                         f"none shared {fmt_interval(full[0].ppl)}: {statuses[-1]}.")
    out.append(Verdict("7", CLAIMS["7"], _combine(statuses), lines))

    out.append(_alignment_verdict("8", alignment, "Needs the transfer (fine-tuning) analysis: run `xling align-report` on this study; its results then appear in the alignment section below."))

    statuses, lines = [], []  # 9: real languages: the minority gains, more with anchors
    for p, role in ((0.1, "L2"), (0.9, "L1")):
        for s in find(S, role, kind="real", p=p, schedule=""):
            statuses.append(_above_one(s.teff))
            lines.append(f"{_scale_name(s.key.length, s.key.model)}, {s.key.vocab} vocabulary, minority {s.label} at "
                         f"{min(p, 1 - p):.0%}: TEff {fmt_interval(s.teff)}{_paper(s.paper, 'teff')}: {statuses[-1]}.")
        for s in find(S, role, kind="real", p=p, vocab="anchored", schedule=""):
            disj = find(S, role, kind="real", p=p, vocab="disjoint", schedule="", length=s.key.length, model=s.key.model)
            if disj:  # the claim's second half: anchors add to the gain
                statuses.append(_compare(s.teff, disj[0].teff, smaller=False))
                lines.append(f"{_scale_name(s.key.length, s.key.model)}: anchored vs disjoint minority TEff "
                             f"{fmt_interval(s.teff)} vs {fmt_interval(disj[0].teff)}: {statuses[-1]}.")
    if lines:  # the paper finds the EN/FR alignment change inconclusive: shown, not judged
        lines += _alignment_lines(alignment, "9") or ["The alignment half of this claim needs the alignment analyses: run `xling align-report` "
                             "on this study."]
    out.append(Verdict("9", CLAIMS["9"], _combine(statuses), lines))
    return out


def headline(a: Analysis) -> list[str]:
    """The demo's key lines: minority TEff at 90/10 and 50/50 next to the paper's, and whether the direction holds."""
    order = _model_order(a)
    pairs = []
    for p in (0.1, 0.5):
        found = _clone(a.summaries, "L2", p=p)
        if found:  # the setting closest to the paper's 1x GPT-small (Table 1), else the smallest model
            pairs.append(min(found, key=lambda s: (abs(math.log(s.key.length)), s.paper_model != "small",
                                                   order.index(s.key.model))))
    lines = [f"{'90/10' if s.key.p == 0.1 else '50/50'}: minority {s.label} TEff = {fmt_stat(s.teff)} (95% CI over "
             f"{s.teff.n} seeds: [{fmt(s.teff.lo)}, {fmt(s.teff.hi)}]{_law_interval(a, s)}){_paper(s.paper, 'teff')}"
             for s in pairs]
    if len(pairs) == 2:
        low, high = pairs
        d, lo, hi = diff_interval(low.teff, high.teff)
        holds = low.teff.mean > high.teff.mean and low.teff.mean > 1
        if holds and _above_one(low.teff) == "supported" and lo > 0:
            word = "HOLDS"
        elif holds:
            word = "holds in the means but is NOT significant"
        else:
            word = "does NOT hold"
        lines.append(f"The paper's direction (a rare language learns more per token: TEff at 90/10 above 1 and above "
                     f"TEff at 50/50) {word} at this scale ({_scale_name(low.key.length, low.key.model)}): "
                     f"difference {fmt(d)} [{fmt(lo)}, {fmt(hi)}].")
        if high.paper and high.paper.teff and high.paper.teff < 1 < high.teff.lo:
            lines.append("Unlike the paper's GPT-small at 1x, our 50/50 TEff is above 1; the paper finds 50/50 TEff "
                         "above 1 early in training (1.09 at 0.4x) and falling below 1 with more training, and this "
                         "CPU model is far smaller and sees about a thousandth of the paper's tokens.")
    return lines


def _law_interval(a: Analysis, s: Summary) -> str:
    """The law's own uncertainty (bootstrap over the ladder) for the mean PPL, as extra honesty."""
    fit = a.laws.get(s.law) if s.law else None
    if fit is None or not fit.bootstrap_laws or not math.isfinite(s.ppl.mean):
        return ""
    e = efficiency(fit, s.fraction, s.ppl.mean)
    return f"; ladder-fit range [{fmt(e.teff_ci[0])}, {fmt(e.teff_ci[1])}]"


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_ladder(a: Analysis, path: Path) -> str | None:
    if not a.laws:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (group, lang), fit in a.laws.items():
        pts = [(r.fraction, r.ppl) for r in a.rows if r.mono and r.law == (group, lang)]
        xs = np.array([p[0] for p in pts])
        name = a.law_name((group, lang))
        line = ax.plot(xs, [p[1] for p in pts], "o", label=f"{name} runs")[0]
        grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.2, 100)
        ax.plot(grid, fit.law.ppl(grid), "-", color=line.get_color(), alpha=0.7, label=f"{name} law")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("data fraction x (tokens / budget T)")
    ax.set_ylabel("test perplexity")
    ax.set_title("Monolingual ladder and fitted law")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    _plt().close(fig)
    return path.name


def figure_lines(a: Analysis, spec: dict, path: Path) -> str | None:
    """A paper-style line plot: y (PPL or TEff) against one grid key, one line per language and other values."""
    x_key, y = spec["x"], spec.get("y", "ppl")
    where, roles = spec.get("where") or {}, spec.get("roles")
    sel = [s for s in a.summaries if x_key in s.spec.dims and (not roles or s.role in roles)
           and all(dotted(s.spec.config, k) == v for k, v in where.items())]
    if not sel:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x_values = list(dict.fromkeys(dotted(r.config, x_key) for r in a.study.runs if x_key in r.dims))
    categorical = any(isinstance(v, str) for v in x_values)
    pos = (lambda v: x_values.index(v)) if categorical else (lambda v: v)
    series: dict[str, list[Summary]] = {}
    several_groups = len({s.spec.group for s in sel}) > 1
    for s in sel:
        others = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in s.spec.dims.items() if k not in (x_key, SEED_KEY))
        if several_groups:  # e.g. a curriculum group next to static mixtures: say which line is which
            others = f"{s.spec.group}: {others}" if others else s.spec.group
        name = s.label + (f" ({others})" if others else "")
        series.setdefault(name, []).append(s)
    if len(series) > 10:  # the default cycle repeats after 10 colours
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for name, members in series.items():
        members.sort(key=lambda s: pos(dotted(s.spec.config, x_key)))
        xs = [pos(dotted(s.spec.config, x_key)) for s in members]
        stats = [getattr(s, y) for s in members]
        err = [[max(0, st.mean - st.lo) if st.n > 1 else 0 for st in stats],
               [max(0, st.hi - st.mean) if st.n > 1 else 0 for st in stats]]
        line = ax.errorbar(xs, [st.mean for st in stats], yerr=err, marker="o", capsize=3, label=name)
        color = line[0].get_color()
        paper = [(x, getattr(s.paper, y)) for x, s in zip(xs, members) if s.paper and getattr(s.paper, y)]
        if paper and y == "teff":
            label = "_nolegend_" if any(h.get_label() == "paper" for h in ax.lines) else "paper"
            ax.plot(*zip(*paper), linestyle="none", marker="D", mfc="none", color=color, label=label)
        if spec.get("mlpe") and x_key == "languages.p":
            _mlpe_curve(a, ax, members, color)
    if y == "teff":
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    else:  # perplexities span a wide range; keep MLPE curves from dwarfing the measurements
        ax.set_yscale("log")
        means = [getattr(s, y).mean for s in sel if math.isfinite(getattr(s, y).mean)]
        if means:
            ax.set_ylim(min(means) / 1.3, max(means) * 2.0)
    if categorical:
        ax.set_xticks(range(len(x_values)), [str(v) for v in x_values])
    ax.set_xlabel(x_key)
    ax.set_ylabel({"ppl": "test perplexity", "teff": "token efficiency (TEff)"}[y])
    ax.set_title(spec.get("title") or f"{y.upper() if y == 'ppl' else 'TEff'} vs {x_key.split('.')[-1]}"
                 + (" (dashed: MLPE)" if spec.get("mlpe") else ""))
    if len(series) > 5:  # many lines: the legend goes beside the plot
        fig.set_size_inches(9.5, 4.2)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)
    return _save(fig, path)


def _mlpe_curve(a: Analysis, ax, members: list[Summary], color) -> None:
    """What a monolingual model would reach with this language's share of the data, across p."""
    s = members[0]
    if s.law is None:
        return
    fit = a.laws[s.law]
    k = s.key.num_clones
    total = float(np.mean([m.fraction / (m.key.p / k if m.role == "L2" else 1 - m.key.p) for m in members
                           if 0 < m.key.p < 1]))
    ps = np.linspace(min(m.key.p for m in members), max(m.key.p for m in members), 50)
    share = ps / k if s.role == "L2" else 1 - ps
    with np.errstate(over="ignore"):  # tiny shares: the law's PPL overflows to inf, which is not drawn
        ax.plot(ps, fit.law.ppl(share * total), ls="--", color=color, alpha=0.7)


# --------------------------------------------------------------------------- document


class Doc:
    """A tiny document model rendered to both Markdown and HTML (one source, two outputs)."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level, text):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def ul(self, items):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header, rows):
        if rows:
            self.blocks.append(("table", header, rows))

    def img(self, name, caption):
        if name:
            self.blocks.append(("img", name, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif b[0] == "table":
                cells = lambda r: "| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |"
                out.append("\n".join([cells(b[1]), "|" + "---|" * len(b[1])] + [cells(r) for r in b[2]]))
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        md = lambda t: re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", re.sub(r"`(.+?)`", r"<code>\1</code>", e(t)))
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{md(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{md(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{md(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{md(str(c))}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{md(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b[0] == "img":
                body.append(f'<figure><img src="{e(b[1])}" alt="{e(b[2])}"><figcaption>{md(b[2])}</figcaption></figure>')
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45;"
       "color:#222}table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;"
       "padding:.25rem .5rem;text-align:left}th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2rem}"
       "figure{margin:1rem 0}img{max-width:100%}figcaption{font-size:.85rem;color:#555}")


def _paper_cell(v: published.Value | None, attr: str) -> str:
    if v is None or getattr(v, attr) is None:
        return ""
    return f"{'≈' if v.approx else ''}{getattr(v, attr):.2f}"


def build_doc(a: Analysis, figures: list[tuple[str, str]], alignment: list | None = None) -> Doc:
    st, doc = a.study, Doc()
    doc.h(1, f"Study report: {st.name}")
    doc.p(st.description)
    meta = [f"Paper reference: {st.paper} ({published.SOURCE})." if st.paper else "",
            f"Generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; scale: {st.scale or 'unspecified'}."]
    doc.ul([m for m in meta if m])

    doc.h(2, "Verdict")
    vs = verdicts(a, alignment)
    hl = headline(a)
    if hl:
        doc.p("**Headline** (minority-language token efficiency, ours against the paper's):")
        doc.ul(hl)
    doc.table(["claim (PAPER.md §6)", "our result"], [[f"{v.claim}. {v.text}", f"**{v.status}**"] for v in vs
                                                      if v.status != "not tested" or v.detail])
    for v in vs:
        if v.detail:
            doc.p(f"**Claim {v.claim}** ({v.status}):")
            doc.ul(v.detail)
    doc.p("How to read this: ± is the half-width of the 95 % t-interval over seeds; perplexities are geometric "
          "means with the interval of ln PPL over seeds, [lo, hi], and are compared by the ratio of two settings; "
          "'supported' means the interval "
          "(of the value, or of the difference between two settings, Welch) excludes the no-effect value in the "
          "paper's direction; 'direction holds, not significant' means the means agree with the paper but the "
          "interval does not exclude no effect. The seed intervals do not include the uncertainty of the "
          "monolingual law fitted to the ladder; the headline gives that range separately.")

    doc.h(2, "Runs")
    n_done = len({r.spec.id for r in a.rows})
    items = [f"{n_done} of {len(st.runs)} runs have results."]
    if a.missing:
        items.append(f"Missing (not yet run or interrupted): {', '.join(a.missing)} — `xling study run {st.name}`.")
    if a.failed:
        items.append(f"Failed: {', '.join(a.failed)} — see study.json in their run directories.")
    if a.repeated:
        worst = max(a.repeated, key=lambda t: t[2])
        items.append(f"**Data was repeated** in {len({r[0] for r in a.repeated})} run(s): up to {worst[2]:.2f} passes "
                     f"over {worst[1]}'s training text ({worst[0]}).")
    elif a.rows:
        items.append(f"No run repeated data: at most {a.max_epochs:.2f} passes over any language's training text.")
    doc.ul(items)
    if a.rows:
        configs = [r.spec.config for r in a.rows]

        def one(key):  # the distinct values of a config key over the runs
            return ", ".join(dict.fromkeys(str(dotted(c, key)) for c in configs))

        def corpus(c):
            name = f"{c['name']} {c['translation']}" if c["name"] == "bible" else f"{c['name']} {', '.join(c['paths'])}"
            return name + ("" if c["books"] == "all" else f" ({c['books']} books)")

        c = configs[0]
        training = (f"batch {one('train.batch_size')}, lr {one('train.lr')}, warm-up {one('train.warmup')}; 1x = data "
                    f"fraction {st.one_x:g} of one pass over the base language's training text")
        languages = corpus(c["corpus"]) + (f" + {corpus(c['languages']['second'])}" if c["languages"]["kind"] == "real" else
                                           " + clones")
        doc.table(["setting", "value"], [
            ["corpus", languages],
            ["model", f"{one('model.preset')}, seq_len {one('model.seq_len')}"],
            ["tokenizer", f"{one('tokenizer.vocab_size')} pieces per language"],
            ["training", training],
            ["evaluation", f"test split, window {one('eval.window')}, last {one('eval.last_n')} scored, "
                           + (f"first {one('eval.max_tokens')} tokens per language" if c["eval"]["max_tokens"] else "whole split")],
        ])

    if a.ladder:
        doc.h(2, "Monolingual ladder")
        rows = []
        for s in sorted(a.ladder, key=lambda s: (a.law_name(s.law) if s.law else s.label, s.fraction)):
            pred = a.laws[s.law].law.ppl(s.fraction) if s.law else math.nan
            rows.append([a.law_name(s.law) if s.law else s.label, fmt(s.fraction, ".3g"), fmt_stat(s.ppl), fmt(pred),
                         s.ppl.n, _paper_cell(s.paper, "ppl")])
        doc.table(["law (language)", "data fraction", "PPL (ours)", "law fit", "seeds", "PPL (paper, GPT-small)"], rows)
        for key, fit in a.laws.items():
            params = ", ".join(f"{k} = {v:.4g}" for k, v in fit.law.param_dict.items())
            doc.p(f"{a.law_name(key)}: ln PPL = E + A·x^(−alpha) with {params}; {fit.law.n_points} points, "
                  f"residual rms {fit.law.residual_rms:.3g} (in ln PPL).")
        doc.ul(a.notes)

    if a.summaries:
        doc.h(2, "Perplexity and token efficiency")
        rows = []
        for s in a.summaries:
            rows.append([s.setting, s.label, fmt(s.fraction, ".3g"), fmt_stat(s.ppl), _paper_cell(s.paper, "ppl"),
                         fmt(s.mlpe), fmt_stat(s.teff), _paper_cell(s.paper, "teff"), s.ppl.n,
                         "†" if s.warnings else ""])
        doc.table(["setting", "language", "share of T", "PPL (ours)", "PPL (paper)", "MLPE", "TEff (ours)",
                   "TEff (paper)", "seeds", ""], rows)
        doc.p("Share of T: the language's training tokens over the reference budget T (one pass over the base "
              "language at 1x). MLPE: the perplexity a monolingual model reaches with that share (from the law). "
              "TEff: monolingual tokens needed for our PPL divided by the tokens the language got. Paper values are "
              "GPT-small on 1.2B tokens unless the study maps its models otherwise (≈: read off a figure): compare "
              "TEff and directions, not perplexity magnitudes.")
        warnings = sorted({w for s in a.summaries for w in s.warnings})
        if warnings:
            doc.p("† extrapolated beyond the monolingual ladder (treat with care):")
            doc.ul(warnings[:12] + ([f"... and {len(warnings) - 12} more"] if len(warnings) > 12 else []))

    if figures:
        doc.h(2, "Figures")
        for name, caption in figures:
            doc.img(name, caption)
    return doc


def write_report(study: Study, root: str | Path | None = None, out: str | Path | None = None,
                 db: str | Path | None = None) -> tuple[Path, Analysis]:
    """Sync the store with the study's run directories, analyse, write report.md, report.html and PNGs."""
    from .store import Store

    root = runs_root(root)
    store = Store(db or root / "xling.db")
    store.sync(study, root)
    with np.errstate(over="ignore"):  # a law evaluated far outside its data overflows to inf, which is handled
        a = analyse(study, store.runs(study.name), store.evaluations(study.name))
    store.close()
    if not a.rows:
        raise XlingError(f"study {study.name} has no finished runs under {root}: run `xling study run {study.name}` first")
    out = Path(out or Path("reports") / study.name)
    figures = []
    name = figure_ladder(a, out / "ladder.png")
    if name:
        figures.append((name, "Monolingual ladder: perplexity against data fraction, with the fitted law."))
    for i, spec in enumerate(study.figures, 1):
        y = spec.get("y", "ppl")
        name = figure_lines(a, spec, out / f"fig{i}-{y}-vs-{spec['x'].split('.')[-1]}.png")
        if name:
            caption = spec.get("title") or f"{'Perplexity' if y == 'ppl' else 'Token efficiency'} against {spec['x']}"
            extra = " Dashed: MLPE (a monolingual model with the same share of data)." if spec.get("mlpe") else ""
            extra += " Diamonds: the paper's values." if y == "teff" else ""
            figures.append((name, caption + " (mean ± 95 % CI over seeds)." + extra))
    # Alignment and transfer results, where `xling align-report` has computed them for this study:
    # their sections go at the end, their verdicts into the claims table at the top.
    from .report_alignment import alignment_sections

    aligned = Doc()
    alignment = alignment_sections(aligned, study, root, out)
    doc = build_doc(a, figures, alignment)
    doc.blocks += aligned.blocks
    atomic_write_text(out / "report.md", doc.markdown())
    atomic_write_text(out / "report.html", doc.html(f"xling report: {study.name}"))
    return out / "report.md", a
