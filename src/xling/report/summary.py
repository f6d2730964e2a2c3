"""What a study's results say, as data: every language of every run scored against its monolingual law,
then aggregated over seeds per setting.

Pipeline: the study's runs (store rows) -> monolingual laws from the ladder runs (one per law
group and language; clones use the base language's law) -> MLPE / MLTE / TEff of every language
of every multilingual run -> mean and 95 % t-interval over seeds per setting, with the paper's
published value beside ours wherever one exists.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis.efficiency import efficiency, ladder_mlte, law_warnings
from ..analysis.scaling_law import (
    FORMS,
    ScalingFit,
    better_form,
    fit_scaling_law,
    leave_one_out_error,
    leave_one_out_laws,
)
from ..config import PRECISIONS, flatten
from ..data.mixture import Mixture
from ..fsio import read_json
from ..identity import EXECUTION_KEYS
from ..study.spec import RunSpec, Study
from ..train.rundir import RunDir
from . import published
from .stats import Stat, log_stat, t_stat

# Config keys that describe the *mixture* of a run, not the monolingual setting its law belongs to (a key of a
# mapping, e.g. languages.mix.fr, counts as its mapping's). Transforms decide which law applies (Mixture.law_language).
MIXTURE_KEYS = ("name", "languages.p", "languages.schedule", "languages.num_clones", "languages.frac_clone",
                "languages.names", "train.seed", "train.data_fraction", "train.steps", "languages.mix",
                "languages.temperature", "languages.unimax_epochs", "languages.transforms")
BOOTSTRAP = 500  # resamples for the law's own uncertainty (shown for the headline numbers)
LADDER = "ladder"  # teff_forms key of the TEff read off the ladder with no law (efficiency.ladder_mlte), shown beside
TEFF_FORMS = tuple(sorted((*FORMS, LADDER)))  # every row's teff_forms keys (ladder, loss, paper), as columns


@dataclass
class Row:
    """One language of one completed run."""

    spec: RunSpec
    language: str
    label: str  # display label: clones beyond the first are pooled (EN2–EN10) so ten languages stay readable
    law_language: str  # whose monolingual law applies: the base language for clones, else itself
    role: str  # L1 = base language, L2 = any other
    mono: bool
    fraction: float  # the paper's accounting: the language's expected share (p/k) of the run's tokens / budget T
    fraction_sampled: float  # the tokens the language's sampled sequences actually had / T
    length: float  # the run's total training, in units of the study's 1x
    ppl: float
    law: tuple[str, str] | None = None  # (law group, law language)
    mlpe: float = math.nan  # under the verdict's law form
    mlte: float = math.nan
    teff: float = math.nan  # verdict form, expected accounting
    teff_forms: dict[str, float] = field(default_factory=dict)  # form (and LADDER) -> TEff, expected accounting
    teff_sampled: float = math.nan  # verdict form, sampled accounting
    warnings: list[str] = field(default_factory=list)
    mix: Mixture | None = None  # the run's mixture, its shares known (temperature, UniMax: as the run drew them)


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
    fraction: float  # expected share of T (the paper's accounting)
    fraction_sampled: float
    ppl: Stat
    mlpe: float
    teff: Stat  # what the verdicts use: the verdict form, expected accounting
    teff_forms: dict[str, Stat]  # form -> TEff over seeds, expected accounting ("paper" is compared with the paper)
    teff_sampled: Stat  # verdict form, sampled accounting
    paper: published.Value | None
    warnings: list[str]
    law: tuple[str, str] | None  # the monolingual law used for TEff


@dataclass
class Analysis:
    study: Study
    rows: list[Row]
    laws: dict[tuple[str, str], ScalingFit]  # the verdict form's law of each (law group, language)
    summaries: list[Summary]  # bilingual settings
    ladder: list[Summary]  # monolingual settings
    missing: list[str]  # run ids without results
    failed: list[str]
    repeated: list[tuple[str, str, float]]  # (run, language, passes) with passes > 1
    max_epochs: float
    notes: list[str]
    laws_by_form: dict[str, dict[tuple[str, str], ScalingFit]] = field(default_factory=dict)
    loo: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # leave-one-out error by form
    loo_laws: dict[tuple[str, str], dict[str, list]] = field(default_factory=dict)  # by form, leave_one_out_laws
    verdict_form: dict[tuple[str, str], str] = field(default_factory=dict)
    ladder_points: dict[tuple[str, str], tuple[list, list]] = field(default_factory=dict)  # (fractions, PPLs)
    alignment: list = field(default_factory=list)  # align-report's evidence (verdict.Evidence), where computed
    earlier: list[str] = field(default_factory=list)  # runs evaluated at an earlier checkpoint: "ID (step S of N)"
    precisions: dict[str, list[str]] = field(default_factory=dict)  # what the runs trained in (run.json's) -> run ids
    evaluated_otherwise: list[str] = field(default_factory=list)  # "ID (trained in X, evaluated in Y)"

    def law_name(self, key: tuple[str, str]) -> str:
        """'EN1' or, when the study has several law groups, 'EN1 (preset=cpu-s)': what tells them apart."""
        groups = [json.loads(g) for g in dict.fromkeys(k[0] for k in self.laws)]
        differ = [k for k in groups[0] if len({json.dumps(g.get(k)) for g in groups}) > 1]
        mine = json.loads(key[0])
        values = ", ".join(f"{k.split('.')[-1]}={mine.get(k)}" for k in differ)
        return f"{key[1]} ({values})" if values else key[1]


NOT_RECORDED = "not recorded"  # a run whose run.json names no precision


def law_group(config: dict) -> str:
    """Runs whose configs agree outside the mixture keys (and how they were executed: logging, checkpoints,
    device) share monolingual laws.

    Disjoint and anchored vocabularies tokenize each language identically, so their monolingual
    runs are the same experiment (the paper fits one EN and one FR law for both).
    """
    flat = {k: v for k, v in flatten(config).items() if k not in MIXTURE_KEYS + EXECUTION_KEYS
            and ".".join(k.split(".")[:2]) not in MIXTURE_KEYS}
    if flat.get("languages.vocab") in ("disjoint", "anchored"):
        flat["languages.vocab"] = "separate"
    if flat.get("languages.kind") == "clone":
        flat.pop("languages.vocab", None)
        flat.pop("languages.second.translation", None)
    return json.dumps(flat, sort_keys=True)


def paper_setting(study: Study, spec: RunSpec, length: float, mono: bool, mix: Mixture | None = None
                  ) -> published.Setting:
    """A setting in the paper's terms; many languages are kind "many" and reordered clones name their word order,
    so neither is matched with a published value (`mix`: the run's mixture, its shares known)."""
    mix, preset = mix or spec.mixture, spec.config["model"]["preset"]
    model = study.paper_models.get(preset, preset if preset in published.PAPER_MODELS else "small")
    vocab = "" if mix.kind == "clone" else mix.vocab
    kind = "many" if mix.many else mix.kind
    order = "+".join(dict.fromkeys(t for lang in range(len(mix.names)) for t in mix.word_order(lang)))
    if mono:  # a joint tokenizer cuts text differently: the paper's monolingual numbers do not apply
        return published.Setting(kind, mix.effective_p, "", 1, 1.0, "joint" if vocab == "joint" else "",
                                 round(length, 3), model, order)
    return published.Setting(kind, mix.effective_p, mix.schedule, mix.num_clones, mix.frac_clone, vocab,
                             round(length, 3), model, order)


def our_setting(study: Study, spec: RunSpec, length: float, mono: bool, mix: Mixture | None = None
                ) -> published.Setting:
    """The same fields with our own model preset: what claims compare across."""
    return dataclasses.replace(paper_setting(study, spec, length, mono, mix), model=spec.config["model"]["preset"])


def run_mixture(spec: RunSpec, run: dict) -> Mixture:
    """A run's mixture with its shares: those temperature sampling and UniMax drew from the corpora's sizes are
    read from its run.json ("shares")."""
    mix = spec.mixture
    if mix.many and not mix.shares:
        recorded = RunDir(run["run_dir"]).read_info(tolerant=True).get("shares") or {}
        mix = dataclasses.replace(mix, shares=tuple(float(recorded.get(name, math.nan)) for name in mix.names))
    return mix


def _here(run: dict, spec: RunSpec, root: Path) -> bool:
    """Whether a store row is of the run directory under `root`: a row of none (a received store's, forged, or of
    another root that shares --db) is no result here."""
    where = run["run_dir"]
    return isinstance(where, str) and spec.run_dir(root).is_dir() and Path(where).resolve() == spec.run_dir(root).resolve()


def analyse(study: Study, runs: list[dict], evals: list[dict], root: str | Path) -> Analysis:
    """Everything the report shows, from the store's rows of this study whose run directories are under `root`
    (the others are missing)."""
    by_id = {r["name"]: r for r in runs}
    eval_by_run: dict[str, list[dict]] = {}
    for e in evals:
        eval_by_run.setdefault(e["run_id"].split("/", 1)[-1], []).append(e)
    rows, missing, failed, repeated, earlier, max_epochs, precisions, evaluated_otherwise = [], [], [], [], [], 0.0, {}, []
    for spec in study.runs:
        run = by_id.get(spec.id)
        run = run if run is not None and _here(run, spec, Path(root)) else None
        if run is None or run["status"] != "completed" or spec.id not in eval_by_run:
            (failed if run and run["status"] == "failed" else missing).append(spec.id)
            continue
        for lang, passes in json.loads(run["data_epochs"] or "{}").items():
            max_epochs = max(max_epochs, passes)
            if passes > 1.0 + 1e-9:
                repeated.append((spec.id, lang, passes))
        cfg = spec.config
        tokens_total = run["steps"] * cfg["train"]["batch_size"] * cfg["model"]["seq_len"]
        run_dir = RunDir(run["run_dir"])
        evaluation = read_json(run_dir.eval_path(), default={})
        evaluated = evaluation.get("step")
        if evaluated is not None and run["steps"] and evaluated < run["steps"]:  # not this run's point
            earlier.append(f"{spec.id} (step {evaluated} of {run['steps']})")
            continue
        trained_in = run_dir.trained_precisions()
        precisions.setdefault(" then ".join(trained_in) or NOT_RECORDED, []).append(spec.id)
        if trained_in and evaluation.get("precision") in PRECISIONS and evaluation["precision"] != trained_in[-1]:
            evaluated_otherwise.append(f"{spec.id} (trained in {trained_in[-1]}, evaluated in {evaluation['precision']})")
        length = tokens_total / run["budget_tokens"] / study.one_x
        mix = run_mixture(spec, run)
        mono, names, shares = mix.monolingual, list(mix.names), mix.expected_shares()
        clone, k = mix.kind == "clone", mix.num_clones
        for e in sorted(eval_by_run[spec.id], key=lambda e: names.index(e["language"])):
            if not e["tokens_trained"]:
                continue  # never trained on (the other language of a monolingual run)
            lang = names.index(e["language"])
            role = "L1" if lang == 0 else "L2"
            label = f"{names[1]}–{names[-1]}" if clone and k > 1 and role == "L2" else e["language"]
            label = " ".join([label, *mix.word_order(lang)])  # a reordered clone: "EN2 inverted"
            expected = shares[lang] * tokens_total / run["budget_tokens"]
            rows.append(Row(spec, e["language"], label, mix.law_language(lang), role, mono, expected, e["fraction"],
                            length, e["ppl"], mix=mix))
    a = Analysis(study, rows, {}, [], [], missing, failed, repeated, max_epochs, [], earlier=earlier,
                 precisions=precisions, evaluated_otherwise=evaluated_otherwise)
    _fit_and_score(a)
    a.summaries = _summaries(study, [r for r in rows if not r.mono], mono=False)
    a.ladder = _summaries(study, [r for r in rows if r.mono], mono=True)
    a.notes = [f"{a.law_name(key)} ({form} form): {n}" for form, laws in a.laws_by_form.items()
               for key, fit in laws.items() for n in fit.notes if form == a.verdict_form[key]]
    return a


def _fit_and_score(a: Analysis) -> None:
    """Both law forms for every (law group, language) with a ladder of >= 3 fractions; the verdict
    uses the form that predicts left-out ladder points better; every row scored under both."""
    ladders: dict[tuple[str, str], list[Row]] = {}
    for r in a.rows:
        if r.mono:
            ladders.setdefault((law_group(r.spec.config), r.law_language), []).append(r)
    for key, points in ladders.items():
        if len({p.fraction for p in points}) < 3:
            continue
        x, ppl = [p.fraction for p in points], [p.ppl for p in points]
        a.ladder_points[key] = (x, ppl)
        for form in FORMS:
            a.laws_by_form.setdefault(form, {})[key] = fit_scaling_law(x, ppl, form=form, bootstrap=BOOTSTRAP)
        a.loo_laws[key] = {form: leave_one_out_laws(x, ppl, form) for form in FORMS}  # (the headline reads them too)
        a.loo[key] = {form: leave_one_out_error(x, ppl, form, a.loo_laws[key][form]) for form in FORMS}
        a.verdict_form[key] = better_form(a.loo[key])
        a.laws[key] = a.laws_by_form[a.verdict_form[key]][key]
    for r in a.rows:
        key = (law_group(r.spec.config), r.law_language)
        if key not in a.laws and a.laws:  # (a study without any ladder measures no TEff at all: nothing to say)
            text, _, order = r.law_language.partition(" ")  # ("EN1 inverted": EN1's text in that word order)
            whose = f"{text}'s text in {r.language}'s word order ({order}), trained alone" if order else text
            r.warnings = [f"no TEff: the study has no monolingual ladder of {whose} (3 or more fractions, the same "
                          "config outside the mixture) to fit its law to"]
        if key not in a.laws or not (r.fraction and r.ppl):
            continue
        r.teff_forms = {form: efficiency(a.laws_by_form[form][key], r.fraction, r.ppl).teff for form in FORMS}
        r.teff_forms[LADDER] = ladder_mlte(*a.ladder_points[key], r.ppl) / r.fraction
        e = efficiency(a.laws[key], r.fraction, r.ppl)
        r.law, r.mlpe, r.mlte, r.teff, r.warnings = key, e.mlpe, e.mlte, e.teff, e.warnings
        if a.verdict_form[key] != "paper":  # the paper-form TEff is still set beside the published one
            r.warnings += [f"under the paper's law form: {w}" for w in law_warnings(a.laws_by_form["paper"][key].law)
                           if w not in e.warnings]
        if r.fraction_sampled:
            r.teff_sampled = efficiency(a.laws[key], r.fraction_sampled, r.ppl).teff


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
        geomean = lambda rs, a: float(np.exp(np.mean(np.log([getattr(r, a) for r in rs]))))  # perplexities
        first = members[0]
        length = float(np.mean([r.length for r in members]))
        snapped = round(length * 20) / 20  # steps are whole batches: near the 1/20 grid of the paper's lengths, on it
        if not mono:
            length = snapped if abs(length - snapped) <= 0.05 * snapped else float(f"{length:.3g}")
        # what every run of the setting says is said once; the others name their run (one seed's PPL, say)
        warnings = sorted({w if all(w in m.warnings for m in members) else f"run {r.spec.id}: {w}"
                           for r in members for w in r.warnings})
        paper_key = paper_setting(study, first.spec, first.fraction / study.one_x if mono else length, mono, first.mix)
        key = our_setting(study, first.spec, first.fraction / study.one_x if mono else length, mono, first.mix)
        form_mean = lambda rs, form: float(np.mean([r.teff_forms.get(form, math.nan) for r in rs]))
        out.append(Summary(setting, first.spec.group, label, first.role, key, paper_key.model, first.spec,
                           float(np.mean([mean(rs, "fraction") for rs in runs])),
                           float(np.mean([mean(rs, "fraction_sampled") for rs in runs])),
                           log_stat([geomean(rs, "ppl") for rs in runs]),
                           float(np.mean([geomean(rs, "mlpe") for rs in runs])),
                           t_stat([mean(rs, "teff") for rs in runs]),
                           {form: t_stat([form_mean(rs, form) for rs in runs]) for form in FORMS}
                           | {LADDER: _every_seed([form_mean(rs, LADDER) for rs in runs])},
                           t_stat([mean(rs, "teff_sampled") for rs in runs]),
                           published.lookup(paper_key, first.role) if study.compares_with_paper else None,
                           warnings, first.law))
    return out


def _every_seed(values: list[float]) -> Stat:
    """Over seeds only where every seed has a value (a ladder TEff is missing outside the ladder's range, and the
    seeds inside it would be a biased subset)."""
    return t_stat(values) if all(math.isfinite(v) for v in values) else t_stat([])


def under_form(a: Analysis, form: str) -> Analysis:
    """The same analysis with every TEff under one law form (e.g. the paper's), for judging the claims
    both ways; perplexities, ladders and everything else are shared."""
    def swap(summaries: list[Summary]) -> list[Summary]:
        return [dataclasses.replace(s, teff=s.teff_forms.get(form, s.teff)) for s in summaries]

    rows = [dataclasses.replace(r, teff=r.teff_forms.get(form, r.teff)) for r in a.rows]  # questions read rows
    return dataclasses.replace(a, rows=rows, summaries=swap(a.summaries), ladder=swap(a.ladder),
                               laws=a.laws_by_form.get(form, a.laws), verdict_form={k: form for k in a.verdict_form})


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
