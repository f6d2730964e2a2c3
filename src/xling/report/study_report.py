"""`xling report STUDY`: a study's tables, figures and a plain-language verdict, as Markdown and HTML.

The numbers come from `summary.analyse` (laws, TEff, seed statistics), the verdicts from
`claims`, the figures from `figures`; this module lays them out beside the paper's values.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np

from ..analysis.scaling_law import E_AT_BOUND, FORMS, law_params
from ..config import ModelConfig
from ..errors import XlingError
from ..fsio import atomic_write_text
from ..model_dims import resolve_model
from ..notation import dotted_get
from ..plotting import svg_copies
from ..study.spec import Study, runs_root
from ..study.store import STORE_NAME, Store
from . import published
from .alignment_report import alignment_sections
from .alignment_results import DEFAULT_TASK
from .beyond import answers, figure_shares, share_rows
from .claims import headline, verdicts
from .doc import Doc
from .figures import figure_ladder, figure_lines
from .stats import fmt, fmt_stat
from .summary import LADDER, NOT_RECORDED, Analysis, analyse, under_form
from .tuning import learning_rates
from .verdict import MEANINGS, Evidence, Status


def build_doc(a: Analysis, figures: list[tuple[str, str]], alignment: list[Evidence] | None = None,
              tuning: list[dict] | None = None) -> Doc:
    st, doc = a.study, Doc()
    doc.h(1, f"Study report: {st.name}")
    doc.p(st.description)
    meta = [f"Paper reference: {st.paper} ({published.SOURCE})." if st.compares_with_paper else
            "No published values are set beside these results (the study names no paper).",
            f"Generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; scale: {st.scale or 'unspecified'}."]
    doc.ul([m for m in meta if m])
    _verdict_section(doc, a, alignment)
    _runs_section(doc, a)
    if a.ladder:
        _ladder_section(doc, a)
    if a.summaries:
        _shares_section(doc, a)
        _efficiency_section(doc, a)
    if tuning:
        _tuning_section(doc, tuning)
    if figures:
        doc.h(2, "Figures")
        for name, caption in figures:
            doc.img(name, caption)
    return doc


def _verdict_section(doc: Doc, a: Analysis, alignment: list[Evidence] | None) -> None:
    doc.h(2, "Verdict")
    vs = verdicts(a, alignment)
    hl = headline(a)
    if hl:
        doc.p("**Headline** (the second language's token efficiency, the minority at 90/10" + (", ours against the paper's):"
                                                                     if a.study.compares_with_paper else "):"))
        doc.ul(hl)
    shown = [i for i, v in enumerate(vs) if v.status is not Status.NOT_TESTED or v.evidence]
    readings = {"paper": under_form(a, "paper"), LADDER: under_form(a, LADDER)}  # claims and questions judged again
    if a.laws:  # TEff claims judged again with every TEff under the paper's law form, and off the ladder
        paper, ladder = verdicts(readings["paper"], alignment), verdicts(readings[LADDER], alignment)
        doc.table(["claim (the paper's §6)", "our result (verdict's law form)", "under the paper's law form",
                   "read off the ladder (no law)"],
                  [[f"{vs[i].claim}. {vs[i].text}", f"**{vs[i].status}**", str(paper[i].status),
                    str(ladder[i].status)] for i in shown])
        doc.p("The verdict's law form is, per ladder, the one with the lower leave-one-out error (see the "
              "monolingual ladder); the next column judges the same claims with the paper's form "
              "1/PPL = c − a·x^(−b), the last with TEffs read off the ladder without a law (interpolated between "
              "its points; none outside them, so a claim that needs an extrapolated TEff is not tested there). "
              "Claims on perplexities alone do not depend on the form.")
    else:
        doc.table(["claim (the paper's §6)", "our result"], [[f"{vs[i].claim}. {vs[i].text}", f"**{vs[i].status}**"]
                                                             for i in shown])
    for v in vs:
        if v.evidence:
            doc.p(f"**Claim {v.claim}** ({v.status}):")
            doc.ul(v.evidence)
    _questions(doc, a, alignment, readings)
    doc.p("How to read this: ± is the half-width of the 95 % t-interval over seeds; perplexities are geometric "
          "means with the interval of ln PPL over seeds, [lo, hi], and are compared by the ratio of two settings; "
          "an effect's interval is that of the value, or of the difference between two settings (Welch). "
          f"{MEANINGS} The seed intervals do not include the uncertainty of the monolingual law fitted to the "
          "ladder; the headline gives that range separately.")


def _questions(doc: Doc, a: Analysis, alignment: list[Evidence] | None, readings: dict[str, Analysis]) -> None:
    """The questions beyond the paper this study can test (beyond.py), judged like the claims (and again under
    each of `readings`: the paper's law form, the ladder)."""
    qs = answers(a, alignment)
    if not qs:
        return
    paper = {q.claim: q.status for q in answers(readings["paper"], alignment)}
    ladder = {q.claim: q.status for q in answers(readings[LADDER], alignment)}
    doc.p("**Questions beyond the paper** (each language's TEff against its own monolingual law):")
    doc.table(["question", "our result (verdict's law form)", "under the paper's law form",
               "read off the ladder (no law)"],
              [[f"{q.claim}. {q.text}", f"**{q.status}**", str(paper.get(q.claim, "–")), str(ladder.get(q.claim, "–"))]
               for q in qs])
    for q in qs:
        doc.p(f"**Question {q.claim}** ({q.status}):")
        doc.ul(q.evidence)


def _shares_section(doc: Doc, a: Analysis) -> None:
    rows = share_rows(a)
    if not rows:
        return
    doc.h(2, "Token efficiency against share, per language")
    doc.table(["language", "setting", "share", "PPL (ours)", "TEff (verdict form)", "TEff (paper form)",
               "TEff (ladder, no law)", "seeds", ""], rows)
    doc.p("Share: the language's expected share of the run's training sequences (temperature sampling and UniMax: "
          "as the run computed them from the training tokens of each language, recorded in its run.json). TEff: "
          "monolingual tokens of that language needed for its PPL, by its own ladder's law, per token it got; "
          "mean [95 % t-interval over seeds]. †: a warning (see the efficiency table).")


def _runs_section(doc: Doc, a: Analysis) -> None:
    st = a.study
    doc.h(2, "Runs")
    n_done = len({r.spec.id for r in a.rows})
    items = [f"{n_done} of {len(st.runs)} runs have results."]
    if a.missing:
        items.append(f"Missing (not yet run, interrupted, or damaged: `xling study status {st.name}` says which): "
                     f"{', '.join(a.missing)} — `xling study run {st.name}`.")
    if a.earlier:
        items.append(f"Evaluated at an earlier checkpoint than their last step, so left out: {', '.join(a.earlier)} "
                     "— their newest checkpoint did not verify when they were evaluated (`xling eval RUN_DIR` names "
                     "it): restore its files and `xling eval` the run, or delete the run's directory and "
                     f"`xling study run {st.name}`.")
    if a.failed:
        items.append(f"Failed: {', '.join(a.failed)} — see study.json in their run directories.")
    if a.repeated:
        worst = max(a.repeated, key=lambda t: t[2])
        items.append(f"**Data was repeated** in {len({r[0] for r in a.repeated})} run(s): up to {worst[2]:.2f} passes "
                     f"over {worst[1]}'s training text ({worst[0]}).")
    elif a.rows:
        items.append(f"No run repeated data: at most {a.max_epochs:.2f} passes over any language's training text.")
    recorded = {p: ids for p, ids in a.precisions.items() if p != NOT_RECORDED}
    if len(recorded) > 1:  # (precision auto differs between CPUs: a study run on several machines)
        items.append("**The runs trained in different precisions**: " + "; ".join(
            f"{p} ({len(ids)}: {', '.join(ids)})" for p, ids in recorded.items()) + ". Differences between them mix "
            "the settings' effects with the precisions' rounding, which moves results by seed-level amounts (README, "
            "\"What the demo does\"): for a clean comparison set `train.precision` in the study's `base` (its runs are "
            "then new ones, all in that precision).")
    elif recorded:
        items.append(f"Every run{' that records it' if NOT_RECORDED in a.precisions else ''} trained in "
                     f"{next(iter(recorded))} (run.json's `precision`).")
    if NOT_RECORDED in a.precisions:
        items.append(f"run.json records no precision for: {', '.join(a.precisions[NOT_RECORDED])}.")
    if a.evaluated_otherwise:
        items.append("**Evaluated in another precision than they trained in** (the device that evaluated them does not "
                     f"multiply theirs natively): {', '.join(a.evaluated_otherwise)}.")
    doc.ul(items)
    if not a.rows:
        return
    configs = [r.spec.config for r in a.rows]

    def one(key):  # the distinct values of a config key over the runs
        return ", ".join(dict.fromkeys(str(dotted_get(c, key)) for c in configs))

    def corpus(c):
        name = f"{c['name']} {c['translation']}" if c["name"] == "bible" else f"{c['name']} {', '.join(c['paths'])}"
        held_out = f" (valid {', '.join(c['valid'])}; test {', '.join(c['test'])})" if c.get("test") else ""
        return name + held_out + ("" if c["books"] == "all" else f" ({c['books']} books)")

    def model(c):  # the preset and its shape as the runs had it (overrides included)
        d = resolve_model(ModelConfig(**c["model"]), 1)
        return f"{c['model']['preset']}: {d.n_layers} layers × {d.d_model} ({d.n_heads} heads, MLP {d.d_mlp})"

    c = configs[0]
    budget = one('train.budget_tokens')
    training = (f"batch {one('train.batch_size')}, lr {one('train.lr')}, warm-up {one('train.warmup')}; 1x = "
                + (f"{budget} tokens (train.budget_tokens)" if budget != "0" else
                   f"data fraction {st.one_x:g} of one pass over the base language's training text"))
    mix = a.rows[0].spec.mixture
    if mix.many:
        languages = f"{c['corpus']['name']} {', '.join(c['languages']['corpora'])}" + (
            "" if c["corpus"]["books"] == "all" else f" ({c['corpus']['books']} books)")
    else:
        languages = corpus(c["corpus"]) + (f" + {corpus(c['languages']['second'])}" if mix.kind == "real" else " + clones")
    doc.table(["setting", "value"], [
        ["corpus", languages],
        ["model", f"{'; '.join(dict.fromkeys(map(model, configs)))}; seq_len {one('model.seq_len')}"],
        ["tokenizer", f"{one('tokenizer.vocab_size')} pieces per language"],
        ["training", training],
        ["evaluation", f"test split, window {one('eval.window')}, last {one('eval.last_n')} scored, "
                       + (f"first {one('eval.max_tokens')} tokens per language" if c["eval"]["max_tokens"] else "whole split")],
    ])


LAW_TEXT = {"loss": "ln PPL = E + A·x^(−alpha)", "paper": "1/PPL = c − a·x^(−b) (the paper's form)"}


def _ladder_section(doc: Doc, a: Analysis) -> None:
    doc.h(2, "Monolingual ladder")
    rows = []
    for s in sorted(a.ladder, key=lambda s: (a.law_name(s.law) if s.law else s.label, s.fraction)):
        fits = [fmt(a.laws_by_form[form][s.law].law.ppl(s.fraction)) if s.law else "–" for form in FORMS]
        rows.append([a.law_name(s.law) if s.law else s.label, fmt(s.fraction, ".3g"), fmt_stat(s.ppl), *fits,
                     s.ppl.n, published.cell(s.paper, "ppl")])
    doc.table(["law (language)", "data fraction", "PPL (ours)", *(f"{form} form fit" for form in FORMS), "seeds",
               "PPL (paper, GPT-small)"], rows)
    items = []
    for key in a.laws:
        for form in FORMS:
            law = a.laws_by_form[form][key].law
            params = law_params(law)
            chosen = " — **used by the verdicts**" if form == a.verdict_form[key] else ""
            if law.exponent_at_bound:  # (at the paper form's b -> 0, law_params gives the line in ln x it becomes)
                chosen = (f"; the exponent is at the {law.exponent_at_bound} bound of its range, so the best fit lies "
                          f"beyond it and the parameters mean little one by one{chosen}")
            if law.asymptote_at_bound:
                chosen = f"; {E_AT_BOUND}{chosen}"
            loo = a.loo[key][form]
            unbounded = (": refitted without one of its points, the law predicts no finite PPL there"
                         if math.isinf(loo) else "")
            items.append(f"{a.law_name(key)}, {form} form: {LAW_TEXT[form]} with {params}; {law.n_points} points; "
                         f"leave-one-out error {fmt(loo, '.3g')} (RMS of ln PPL{unbounded}){chosen}.")
    doc.ul(items)
    doc.p("Which form the verdicts use: for each law, the one that predicts a ladder point it was not fitted to "
          "better (leave-one-out error, in ln PPL for both forms; the loss form when neither can be estimated). "
          "Comparisons with a published TEff always use the paper's form, as the paper did.")
    doc.ul(a.notes)


def _efficiency_section(doc: Doc, a: Analysis) -> None:
    doc.h(2, "Perplexity and token efficiency")
    rows = []
    for s in a.summaries:
        verdict = a.verdict_form.get(s.law, "loss")
        teffs = [f"**{fmt_stat(s.teff_forms[f])}**" if f == verdict else fmt_stat(s.teff_forms[f]) for f in FORMS]
        rows.append([s.setting, s.label, fmt(s.fraction, ".3g"), fmt(s.fraction_sampled, ".3g"), fmt_stat(s.ppl),
                     published.cell(s.paper, "ppl"), fmt(s.mlpe), *teffs, fmt_stat(s.teff_forms[LADDER]),
                     fmt_stat(s.teff_sampled),
                     published.cell(s.paper, "teff"), s.ppl.n, "†" if s.warnings else ""])
    doc.table(["setting", "language", "share of T", "sampled share", "PPL (ours)", "PPL (paper)", "MLPE",
               *(f"TEff ({f} form)" for f in FORMS), "TEff (ladder, no law)", "TEff (sampled share)", "TEff (paper)",
               "seeds", ""], rows)
    doc.p("Share of T: the language's expected share of the run's tokens (p/k of them, 0.5 per language for a "
          "schedule averaging 50/50) over the reference budget T (one pass over the base language, or the study's "
          "pinned train.budget_tokens: the paper's 1x): the paper's "
          "accounting, used for every TEff unless said otherwise. Sampled share: what the language's sampled "
          "sequences actually got; TEff (sampled share) uses it with the verdict's law form. MLPE: the perplexity "
          "a monolingual model reaches with that share (verdict form). TEff: monolingual tokens needed for our PPL "
          "divided by the tokens the language got, under each law form; the bold one is the verdict's. TEff (ladder, "
          "no law): the same read off the monolingual ladder itself, interpolated between its points in log-log "
          "(made monotone), blank (–) where our PPL lies outside the ladder's: no law shape assumed, no "
          "extrapolation; where it differs much from the law forms, the laws misfit the ladder. Paper "
          "values are GPT-small on 1.2B tokens unless the study maps its models otherwise (≈: read off a figure): "
          "compare directions, TEff (paper form) only loosely (the paper's own TEffs move with training length "
          "and model size), and not perplexity magnitudes."
          + (" A row of several clones (EN2–EN10): each run's mean over them, then over seeds; the paper scores its "
             "first clone (EN2) alone, which has the same expectation and a larger spread."
             if any("–" in s.label for s in a.summaries) else ""))
    warnings = sorted({w for s in a.summaries for w in s.warnings})
    if warnings:
        doc.p("† warnings of the row's TEff, the verdict form's unless they say \"under the paper's law form\" "
              "(extrapolation beyond the monolingual ladder, a degenerate fit or a ladder too short for a stable "
              "interval; treat with care):")
        doc.ul(warnings[:12] + ([f"... and {len(warnings) - 12} more"] if len(warnings) > 12 else []))


def _tuning_section(doc: Doc, rows: list[dict]) -> None:
    doc.h(2, "Learning rate")
    doc.table(["setting", "learning rate", "validation PPL (geometric mean over seeds)", "seeds", ""],
              [[r["setting"], f"{r['lr']:g}", fmt_stat(r["valid_ppl"]), r["valid_ppl"].n, "**best**" if r["best"] else ""]
               for r in rows])
    doc.p("Chosen by the base language's validation perplexity at the end of training (the test split is never "
          "used to choose): the rate whose 95 % interval over seeds ends lowest, so a rate that is good for every "
          "seed beats one with a lucky seed and an unstable other.")


def analyse_study(study: Study, root: str | Path | None = None, db: str | Path | None = None) -> Analysis:
    """Sync the store with the study's run directories and analyse what they hold (what a report shows)."""
    root = runs_root(root)
    if not any(spec.run_dir(root).is_dir() for spec in study.runs):  # nothing to read: write no store either
        raise XlingError(f"study {study.name} has no finished runs under {root}: run `{study.command('run', root)}` first")
    store = Store(db or root / STORE_NAME)
    store.sync(study, root)
    with np.errstate(over="ignore"):  # a law evaluated far outside its data overflows to inf, which is handled
        a = analyse(study, store.runs(study.name), store.evaluations(study.name), root)
    store.close()
    if not a.rows:
        raise XlingError(f"study {study.name} has no finished runs under {root}: run `{study.command('run', root)}` first")
    return a


def write_report(study: Study, root: str | Path | None = None, out: str | Path | None = None,
                 db: str | Path | None = None, task: str = DEFAULT_TASK) -> tuple[Path, Analysis]:
    """Sync the store with the study's run directories, analyse, write report.md, a self-contained
    report.html (figures embedded) and the figures as PNG and SVG. `task`: the transfer task whose results
    (`xling align-report --task`) the alignment section shows."""
    root = runs_root(root)
    a = analyse_study(study, root, db)
    out = Path(out or Path("reports") / study.name)
    figures = []
    with svg_copies():  # every figure also as SVG, for papers
        name = figure_ladder(a, out / "ladder.png")
        if name:
            figures.append((name, "Monolingual ladder: perplexity against data fraction, with the fitted law."))
        name = figure_shares(a, out / "teff-vs-share.png")
        if name:
            figures.append((name, "Token efficiency against share, one line per language (each against its own law; "
                                  "mean ± 95 % CI over seeds)."))
        for i, spec in enumerate(study.figures, 1):
            y = spec.get("y", "ppl")
            name = figure_lines(a, spec, out / f"fig{i}-{y}-vs-{spec['x'].split('.')[-1]}.png")
            if name:
                caption = spec.get("title") or f"{'Perplexity' if y == 'ppl' else 'Token efficiency'} against {spec['x']}"
                extra = " Dashed: MLPE (a monolingual model with the same share of data; the law form is in the title)." if spec.get("mlpe") else ""
                extra += " Diamonds: the paper's values (where it has one)." if y == "teff" and study.compares_with_paper else ""
                mean = "geometric mean" if y == "ppl" else "mean"  # (perplexities are averaged as their logs)
                figures.append((name, caption + f" ({mean} ± 95 % CI over seeds)." + extra))
        # Alignment and transfer results, where `xling align-report` has computed them for this study:
        # their sections go at the end, their verdicts into the claims table at the top.
        aligned = Doc()
        alignment = alignment_sections(aligned, study, root, out, task)
    a.alignment = alignment or []
    doc = build_doc(a, figures, alignment, learning_rates(study, root))
    doc.blocks += aligned.blocks
    atomic_write_text(out / "report.md", doc.markdown())
    # self-contained: the figures are embedded (report.html can be mailed alone)
    atomic_write_text(out / "report.html", doc.html(f"xling report: {study.name}", base=out))
    return out / "report.md", a
