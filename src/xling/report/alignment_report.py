"""The alignment and transfer part of a study report, with the paper's values beside ours.

Covers the paper's Table 2 (hidden-state cosine per layer, clones), Table 4 (the same for
English/French), Figure 6 (gradient cosine heatmaps, clones), Figure 7 (clone-pair embedding
cosine against p, with the word2vec control), Figures 11–13 (embedding cosine by token
frequency; word2vec; EN/FR gradients) and Figure 1 right (zero-shot transfer against p).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis.alignment_plots import plot_gradients
from ..errors import XlingError
from ..fsio import atomic_write_text
from ..plotting import svg_copies
from ..study.spec import Study, runs_root
from ..study.state import is_complete
from .alignment_results import (
    BEYOND,
    DEFAULT_TASK,
    Setting,
    centred_baseline,
    centred_excess,
    collect,
    compute_missing,
    coverage,
    embedding_excess,
    find,
    get,
    hidden_excess,
    higher,
    layers,
    mean_hidden,
    measure_layers,
    measure_mean,
    pair_cosines,
    stat,
)
from .doc import Doc
from .figures import figure_by_frequency, figure_embeddings_by_p, figure_over_training, figure_transfer
from .published import (
    PAPER_ALL_PAIRS,
    PAPER_EMBEDDING,
    PAPER_GRAD_SEQUENCES,
    PAPER_GRADIENT,
    PAPER_HIDDEN,
    PAPER_REAL_HIDDEN_DELTA,
    PAPER_TRANSFER,
)
from .stats import fmt_stat
from .verdict import NOT_TESTED, Evidence, Status, compare


def _cell(values, spec=".3f") -> str:
    return fmt_stat(stat(values), spec)


def _paper_value(values: dict, p: float) -> str:
    v = values.get(round(p, 2))
    return f"{v:.2f}" if v is not None else ""


def _slug(text: str) -> str:
    """A file name's part of a label: "EN1 50 % – EN2 25 %" is EN1-50-EN2-25."""
    return "-".join("".join(c if c.isalnum() else " " for c in text).split())


def _hidden_table(doc: Doc, settings: list[Setting]) -> None:
    """Per-layer hidden cosine of each setting, its mean, the shuffled baseline and the excess."""
    n_layers = max(len(layers(s)) for s in settings)
    rows = [[f"layer {i + 1}"] + [_cell(layers(s)[i]) if i < len(layers(s)) else "" for s in settings]
            for i in range(n_layers)]
    rows.append(["mean over layers"] + [_cell(mean_hidden(s)) for s in settings])
    rows.append(["shuffled baseline (mean)"] + [_cell(np.nanmean(a["hidden"]["shuffled_baseline"])
                                                      for a in s.alignments) for s in settings])
    rows.append(["mean above the baseline"] + [_cell(hidden_excess(s)) for s in settings])
    doc.table(["layer"] + [s.label for s in settings], rows)


def _hidden_clones(doc: Doc, clones: list[Setting], paper: bool) -> list[Evidence]:
    doc.h(3, "Hidden-state cosine per layer, clones (paper Table 2)")
    _hidden_table(doc, clones)
    if paper:
        doc.table(["paper (GPT-small)"] + [f"layer {i + 1}" for i in range(12)] + ["mean (ours, of its layers)"],
                  [[f"{round(100 * (1 - p))}/{round(100 * p)}"] + [f"{v:.2f}" for v in vals] + [f"{np.mean(vals):.2f}"]
                   for p, vals in PAPER_HIDDEN.items()])
    imb, bal = find(clones, "clone", 0.1), find(clones, "clone", 0.5)
    raw, excess = higher(imb, bal, mean_hidden), higher(imb, bal, hidden_excess)
    doc.p(f"**Is 90/10 more aligned than 50/50?** Mean hidden cosine over layers (the paper's measure): "
          f"{raw.answer()}; the same above the shuffled baseline (a shift of every state that unrelated text "
          f"shares does not count): {excess.answer()}." + (" Paper: yes, 0.85 vs 0.60 (the means of its published "
                                                           "layers; no baseline reported)."
                                                           if paper else ""))
    evidence = [Evidence("3", f"hidden states 90/10 > 50/50, the paper's raw cosine: {raw.answer()}", raw),
                Evidence("3", f"the same above the shuffled baseline: {excess.answer()}")]
    return evidence + _beyond_paper(doc, clones, "3", imb, bal)


def _beyond_paper(doc: Doc, settings: list[Setting], claim: str, imb: Setting | None,
                  bal: Setting | None) -> list[Evidence]:
    """Per layer and over seeds: the centred cosine, CKA and retrieval (shown beside the paper's measure)."""
    measured = [s for s in settings if measure_mean(s, "centred")]
    if not measured:
        return []
    doc.p("Beyond the paper's measure (`xling align`): small models mark each language with a large offset "
          "shared by all its hidden states, which can make translations look opposite under the raw cosine. "
          "**Centred cosine** subtracts each language's mean hidden state per layer (from validation text, not "
          "the scored probes); **linear CKA** compares the two languages' token representations up to rotation "
          "and scale (it also sees what both share by construction, such as position); **retrieval** is how "
          "often a window's translation is its nearest window of the other language (mean-pooled, centred), "
          "against chance 1/N.")
    evidence = []
    for name, title in BEYOND.items():
        n_layers = max(len(measure_layers(s, name)) for s in measured)
        rows = [[f"layer {i + 1}"] + [_cell(measure_layers(s, name)[i]) if i < len(measure_layers(s, name)) else ""
                                      for s in measured] for i in range(n_layers)]
        rows.append(["mean over layers"] + [_cell(measure_mean(s, name)) for s in measured])
        if name == "retrieval":
            rows.append(["chance"] + [_cell(a["hidden"][name]["chance"] for a in s.alignments if name in a["hidden"])
                                      for s in measured])
        if name == "centred" and any(centred_baseline(s) for s in measured):
            rows.append(["shuffled pairs (not translations), mean"] + [_cell(centred_baseline(s)) for s in measured])
            rows.append(["translations above shuffled pairs"] + [_cell(centred_excess(s)) for s in measured])
        doc.table([title] + [s.label for s in measured], rows)
        test = higher(imb, bal, lambda s, n=name: measure_mean(s, n))
        evidence.append(Evidence(claim, f"{title} 90/10 > 50/50 (beyond the paper): {test.answer()}"))
        if name == "centred" and imb and bal and centred_excess(imb) and centred_excess(bal):
            excess = higher(imb, bal, centred_excess)
            evidence.append(Evidence(claim, f"{title} above its shuffled pairs, 90/10 > 50/50: {excess.answer()}"))
    return evidence


def _hidden_reals(doc: Doc, reals: list[Setting], paper: bool) -> list[Evidence]:
    doc.h(3, "Hidden-state cosine per layer, real languages (paper Table 4)")
    _hidden_table(doc, reals)
    evidence = []
    for vocab in sorted({s.vocab for s in reals}):
        imb, bal = find(reals, "real", 0.1, vocab), find(reals, "real", 0.5, vocab)
        if imb and bal:
            deltas = [np.mean(a) - np.mean(b) for a, b in zip(layers(imb), layers(bal))]
            inside = all(abs(d) <= PAPER_REAL_HIDDEN_DELTA for d in deltas)
            excess = higher(imb, bal, hidden_excess).answer()
            doc.p(f"{vocab}: Δ(90/10 − 50/50) per layer " + ", ".join(f"{d:+.3f}" for d in deltas)
                  + f" — {'within' if inside else 'outside'} ±{PAPER_REAL_HIDDEN_DELTA}"
                  + (" (the paper's: it finds no consistent change for EN/FR)" if paper else "")
                  + "; above the shuffled baseline, "
                  f"90/10 > 50/50: {excess}.")
            pair = "/".join(imb.alignments[0]["languages"])
            evidence.append(Evidence("9", f"{vocab} {pair} hidden-state change within ±{PAPER_REAL_HIDDEN_DELTA}: "
                                          f"{'yes' if inside else 'no'}; above the baseline, 90/10 > 50/50: {excess}"))
            evidence += _beyond_paper(doc, [s for s in reals if s.vocab == vocab], "9", imb, bal)
    return evidence


def _sequences(graded: list[Setting]) -> str:
    """How many probe sequences the runs' gradient cosines averaged ("100", or "50-100" where runs differ)."""
    counts = sorted({a["gradient"]["sequences"] for s in graded for a in s.alignments if a.get("gradient")})
    return "-".join(map(str, counts[::max(1, len(counts) - 1)]))


def _gradient_protocol(graded: list[Setting], paper: bool = True) -> str:
    """How the runs' gradients were taken; `paper`: against the authors' way (fp16 autocast, PAPER_GRAD_SEQUENCES)."""
    taken = [a["gradient"] for s in graded for a in s.alignments if a.get("gradient")]
    precisions = sorted({g.get("precision", "fp32") for g in taken})  # (xling before 2026-11-29: always fp32)
    ours = (f"Ours are taken in {' or '.join(precisions)}{' (runs or pairs differ)' if len(precisions) > 1 else ''} "
            f"over {_sequences(graded)} probe sequences per run")
    nonfinite = sum(g.get("nonfinite", 0) for g in taken)
    dropped = (f" ({nonfinite} of all runs' {sum(g['sequences'] for g in taken)} sequences gave gradients that are "
               "not finite and are left out)") if nonfinite else ""
    if not paper:
        return ours + dropped + "."
    if precisions == ["fp16"] and min(g["sequences"] for g in taken) >= PAPER_GRAD_SEQUENCES:
        return (f"Ours are taken the authors' way: under fp16 autocast without loss scaling, over {_sequences(graded)} "
                f"probe sequences per run{dropped}.")
    return (f"{ours}{dropped}, the authors' under fp16 autocast over {PAPER_GRAD_SEQUENCES}, so that noise differs "
            f"too (on a GPU `xling align-report NAME --grad-precision fp16 --grad-sequences {PAPER_GRAD_SEQUENCES}` "
            "takes them again the authors' way).")


def _gradients(doc: Doc, graded: list[Setting], clones: list[Setting], out: Path, paper: bool) -> list[Evidence]:
    doc.h(3, "Gradient cosine (paper Figure 6; EN/FR Figure 13)")
    rows = []
    for s in graded:
        published = PAPER_GRADIENT.get((s.vocab, s.p)) if not (s.schedule or s.pair) else None
        rows.append([s.label, _cell(get(a, "gradient", "block_mean") for a in s.alignments),
                     _cell(get(a, "gradient", "block_mean_without_key_bias") for a in s.alignments)]
                    + ([f"{published:.3f}" if published is not None else ""] if paper else []))
    doc.table(["setting", "mean over block tensors (ours, the paper's set)", "without the key bias"]
              + (["paper"] if paper else []), rows)
    doc.p("The paper averages every block tensor, the key bias included; that bias gets a gradient of zero in exact "
          "arithmetic (a constant added to all of a row's attention scores leaves the softmax unchanged), so its "
          "cosine is one of rounding noise, and the mean without it is shown beside."
          + " " + _gradient_protocol(graded, paper))
    for s in graded:
        name = f"gradient-{_slug(s.label)}.png"
        plot_gradients(s.alignments[0]["gradient"], out / name, f"{s.label}: gradient cosine (first seed)")
        doc.img(name, f"Gradient cosine per tensor and layer, {s.label} (first seed).")
    if not clones:
        return []
    imb, bal = find(clones, "clone", 0.1), find(clones, "clone", 0.5)
    test = higher(imb, bal, lambda s: [get(a, "gradient", "block_mean") for a in s.alignments])
    without = higher(imb, bal, lambda s: [get(a, "gradient", "block_mean_without_key_bias") for a in s.alignments])
    doc.p(f"**Gradients more aligned at 90/10 than at 50/50?** {test.answer()} (without the key bias: "
          f"{without.answer()})." + (" Paper: yes (0.534 vs 0.072)." if paper else ""))
    return [Evidence("3", f"gradients 90/10 > 50/50, the paper's block mean: {test.answer()}", test),
            Evidence("3", f"the same without the key bias: {without.answer()}")]


def _embeddings(doc: Doc, embedded: list[Setting], out: Path, paper: bool) -> list[Evidence]:
    doc.h(3, "Clone-pair embedding cosine (paper Figure 7; by frequency and word2vec, Figures 11–12)")
    rows = []
    w2v = any("word2vec" in a for s in embedded for a in s.alignments)  # (`xling demo` aligns without the control)
    for s in embedded:
        cells = [s.label]
        for group, kind in (("embeddings", "input"), ("embeddings", "output"), ("word2vec", "input"),
                            ("word2vec", "output"))[:4 if w2v else 2]:
            pair = _cell(get(a, group, kind, "clone_pairs") for a in s.alignments)
            base = _cell(get(a, group, kind, "all_pairs") for a in s.alignments)
            cells.append(f"{pair} (all {base})")
        if paper:
            cells += ["", ""] if s.pair else [_paper_value(PAPER_EMBEDDING[kind], s.p) for kind in ("input", "output")]
        rows.append(cells)
    doc.table(["setting", "input", "output"] + (["word2vec input", "word2vec output"] if w2v else [])
              + (["paper input ≈", "paper output ≈"] if paper else []), rows)
    if paper:
        doc.p(f"Paper all-pairs baselines ≈ {PAPER_ALL_PAIRS['input']} (input), ≈ {PAPER_ALL_PAIRS['output']} "
              "(output); word2vec shows no dependence on p; frequent tokens carry the alignment (≈0.75 at p = 0.05).")
    doc.img(figure_embeddings_by_p(embedded, out / "embeddings-by-p.png", paper),
            "Clone-pair cosine against p: model and word2vec, input and output (dotted: all-pairs baselines).")
    doc.img(figure_by_frequency(embedded, out / "embeddings-by-frequency.png"),
            "Clone-pair cosine by training frequency of the token, one line per setting (first seed); dotted: "
            "the mean cosine of the bin's other pairs (not clone pairs; bins of at least 5 pairs). Alignment is "
            "the height above it: rarely trained rows move alike, so they are similar to any row of their bin.")
    # the tokens of the training text only, where the alignments have them (computed since 2026-11-29)
    text_only = ("input", "output") if _seen_only(doc, embedded) else ()
    imb, bal = find(embedded, "clone", 0.1), find(embedded, "clone", 0.5)
    evidence = []
    for kind in ("input", "output"):  # the paper's quantity counts: the clone-pair mean (Figure 7's y axis)
        raw = higher(imb, bal, lambda s, k=kind: pair_cosines(s, "embeddings", k))
        above = higher(imb, bal, lambda s, k=kind: embedding_excess(s, "embeddings", k))
        # beside it, not counted: the excess over all pairs, and word2vec on the same stream, the control (the paper
        # finds no trend in its clone-pair mean; it learns nothing across languages)
        control = higher(imb, bal, lambda s, k=kind: pair_cosines(s, "word2vec", k))
        evidence += [Evidence("3", f"{kind} embeddings 90/10 > 50/50, the paper's clone-pair mean: {raw.answer()}", raw),
                     Evidence("3", f"the same above the all-pairs baseline (beyond the paper): {above.answer()}"),
                     Evidence("3", f"control: word2vec {kind} 90/10 > 50/50, clone-pair mean"
                                   + (" (paper: no trend)" if paper else "") + f": {control.answer()}")]
        if raw.status is Status.SUPPORTED and control.status is Status.SUPPORTED:
            baseline = higher(imb, bal, lambda s, k=kind: pair_cosines(s, "embeddings", k, "all_pairs"))
            shared = (f"The {kind} embeddings' clone pairs are more similar at 90/10, but so are word2vec's, which "
                      "learns nothing across languages" + (", and so are any two rows of the matrix (its all-pairs "
                                                          "baseline is higher too)" if baseline.status is
                                                          Status.SUPPORTED else "")
                      + ": the paper's measure moves with imbalance without alignment" + (
                          "; above the all-pairs baseline the clone pairs are more similar too (beyond the paper)"
                          if above.status is Status.SUPPORTED else ""))
            doc.p(shared + ".")
            evidence.append(Evidence("3", f"caveat: {shared[0].lower()}{shared[1:]}"))
    for kind in text_only:  # beyond the paper, beside its measure
        test = higher(imb, bal, lambda s, k=kind: embedding_excess(s, "embeddings", k, "seen"))
        evidence.append(Evidence("3", f"{kind} embeddings 90/10 > 50/50, tokens of the training text only, clone pairs "
                                      f"above all pairs (beyond the paper): {test.answer()}"))
    return evidence


def _seen_only(doc: Doc, embedded: list[Setting]) -> bool:
    """The clone-pair cosines of the tokens of the training text only, beside the paper's mean over every pair;
    whether any alignment has them."""
    rows = []
    for s in embedded:
        seen = sorted({get(a, "embeddings", "pairs_seen") for a in s.alignments} - {None})
        if seen:  # (alignments computed before 2026-11-29 lack it)
            every = max(get(a, "embeddings", "pairs") for a in s.alignments)
            rows.append([s.label, *(f"{_cell(get(a, 'embeddings', kind, 'seen', 'clone_pairs') for a in s.alignments)}"
                                    f" (all {_cell(get(a, 'embeddings', kind, 'seen', 'all_pairs') for a in s.alignments)})"
                                    for kind in ("input", "output")),
                         f"{'–'.join(map(str, dict.fromkeys([seen[0], seen[-1]])))} of {every}"])
    if rows:
        doc.p("Beyond the paper: the clone-pair cosines of the tokens of the training text only. The paper averages "
              "over every clone pair, also of tokens the training text never has: their output rows are pushed down "
              "alike in both languages (a pair near 1, lifting the output mean), their input rows stay at their "
              "random start (a pair near 0, lowering the input mean); neither is learned alignment.")
        doc.table(["setting", "input, tokens of the text", "output, tokens of the text", "clone pairs of the text"], rows)
    return bool(rows)


def _transfer(doc: Doc, transfers: list[Setting], clones: list[Setting], out: Path, paper: bool) -> list[Evidence]:
    doc.h(3, "Zero-shot transfer (paper Figure 1 right)")
    t0 = transfers[0].transfers[0]
    doc.p(f"Task `{t0['task']}` ({len(t0['labels'])} classes; majority class {t0['majority_baseline']:.2f}): "
          f"fine-tuned {t0['steps']} steps in the first language, evaluated in every language."
          + (" The paper fine-tunes on GLUE in EN1 and tests EN2 zero-shot (mean over tasks); its accuracies are "
             "set beside for their direction only: other tasks, with other chance levels." if paper else ""))
    rows = []
    for s in transfers:
        names = list(s.transfers[0]["accuracy"])
        accs = [_cell((t["accuracy"].get(n) for t in s.transfers), ".3f") for n in names]
        paper_l2 = PAPER_TRANSFER["L2"].get(round(s.p, 2)) if s.kind == "clone" and not (s.schedule or s.pair) else None
        others = ", ".join(accs[1:]) if len(names) < 3 else ", ".join(f"{n} {a}" for n, a in zip(names[1:], accs[1:]))
        rows.append([s.whole or s.label, accs[0], others]
                    + ([PAPER_TRANSFER["L1"] if s.kind == "clone" and not s.pair else "",
                        f"{paper_l2:.2f}" if paper_l2 is not None else ""] if paper else []))
    doc.table(["setting", "fine-tuned language", "other language(s), zero-shot"]
              + (["paper EN1", "paper EN2"] if paper else []), rows)
    notes = sorted({note for s in transfers for t in s.transfers for note in t.get("notes", [])})
    if notes:  # what makes the accuracies say less (the task's text, few examples), as the runs' results say it
        doc.p("Notes of the runs' transfer results: " + "; ".join(notes) + ".")
    doc.img(figure_transfer(transfers, out / "transfer-by-p.png", paper),
            "Accuracy of the fine-tuned language and zero-shot accuracy of the clone against p.")
    if not clones:
        return []
    imb, bal = find(transfers, "clone", 0.1), find(transfers, "clone", 0.5)
    zero_shot = lambda s: [list(t["accuracy"].values())[1] for t in s.transfers]
    test, majority = higher(imb, bal, zero_shot), t0["majority_baseline"]
    above = lambda st: st.lo > majority if st.n > 1 else st.mean > majority  # (one seed: its sign only)
    if imb and bal and not any(above(stat(zero_shot(s))) for s in (imb, bal)):  # no transfer to compare at all
        return [Evidence("8", f"zero-shot transfer 90/10 > 50/50: not tested: in neither setting is the zero-shot "
                              f"accuracy significantly above the majority class ({majority:.3f}; 90/10 "
                              f"{_cell(zero_shot(imb))}, 50/50 {_cell(zero_shot(bal))}), "
                              f"so no transfer is shown at this scale (the difference: {test.answer()})", NOT_TESTED)]
    return [Evidence("8", f"zero-shot transfer 90/10 > 50/50: {test.answer()}", test)]


def _over_training(doc: Doc, clones: list[Setting], out: Path) -> list[Evidence]:
    """When, if ever, does 90/10 separate from 50/50 during training (at the checkpoints the runs kept)?"""
    doc.h(3, "Alignment over training")
    tracked = [s for s in clones if len(s.history) > 1]
    seeds = ", ".join(f"{s.label} {min(len(v) for v in s.history.values())}" for s in tracked)
    doc.img(figure_over_training(clones, out / "alignment-over-training.png"),
            f"Hidden-state cosine against training tokens at every kept checkpoint (mean and 95 % interval over the "
            f"seeds aligned at each checkpoint; seeds, at least: {seeds}).")
    imb, bal = find(clones, "clone", 0.1), find(clones, "clone", 0.5)
    if not (imb and bal):
        return []
    if not (len(imb.history) > 1 and len(bal.history) > 1):  # nothing to compare: no evidence either way
        doc.p("Only " + " and ".join(s.label for s in tracked) + (" has" if len(tracked) == 1 else " have")
              + " alignments at the checkpoints: run `xling align --checkpoints all` on the runs of both 90/10 and "
              "50/50 to compare them over training.")
        return []
    lines = []
    for measure, title in (("mean", "raw cosine (the paper's)"), ("centred", "centred cosine")):
        steps = sorted(set(imb.history) & set(bal.history))
        tests = {step: compare(stat(_at(imb, step, measure)), stat(_at(bal, step, measure))) for step in steps}
        apart = [step for step in steps if tests[step].status is Status.SUPPORTED]
        for_good = next((step for i, step in enumerate(steps) if set(steps[i:]) <= set(apart)), None)
        when = (f"from {imb.history[for_good][0]['tokens']:,} training tokens on (step {for_good})" if for_good
                else f"at {len(apart)} of {len(steps)} checkpoints, not for good" if apart else "at no checkpoint")
        lines.append(f"{title}: 90/10 is significantly above 50/50 {when}; at the last one "
                     f"{tests[steps[-1]].answer()}." if steps else f"{title}: no checkpoint in common.")
    doc.ul(lines)
    return [Evidence("3", f"over training, {line}") for line in lines]


def _at(s: Setting, step: int, measure: str) -> list[float]:
    return [a["hidden"]["mean"] if measure == "mean" else a["hidden"].get(measure, {}).get("mean")
            for a in s.history[step]]


def _left_out_note(doc: Doc, settings: list[Setting]) -> None:
    """Say where held-out segments longer than a probe were left out (own parallel text): the rest is no random
    sample of it."""
    cut = [a["probes_left_out"] for s in settings for a in s.alignments if a.get("probes_left_out")]
    if cut:
        counts, of = sorted(c["count"] for c in cut), sorted({f"{c['of']} {c['unit']}s" for c in cut})
        many = f"{counts[0]}-{counts[-1]}" if counts[0] != counts[-1] else f"{counts[0]}"
        doc.p(f"In {len(cut)} alignment{'s' * (len(cut) > 1)}, {many} of the held-out {' / '.join(of)} are longer than "
              "the model's sequence on a side and are left out of the probes: the longest, so the probes are a biased "
              "sample of the held-out text (a longer model.seq_len, or shorter segments translated line by line, keep "
              "them).")


def _coverage_note(doc: Doc, study: Study, root, task: str) -> bool:
    """Say which runs the alignment and transfer sections lack (e.g. runs reused from a study that was not
    analysed, or analysed only in part); True if any."""
    covered, lacking = coverage(study, root, task), []
    left_out = [name for name, aligned, _ in covered["unaligned"] if not aligned]
    if left_out:
        lacking.append(f"{'; '.join(left_out)} {'has' if len(left_out) == 1 else 'have'} no alignment (left out of "
                       "the alignment tables, figures and verdicts below)")
    lacking += [f"{name}: {aligned} of {n} seeds aligned (its rows pool those)"
                for name, aligned, n in covered["unaligned"] if aligned]
    if 0 < covered["transferred"] < covered["finished"]:  # (none at all, as after `xling demo`: no section, no note)
        lacking.append(f"no transfer result on {Path(task).stem} for runs of {'; '.join(covered['untransferred'])}")
    if lacking:
        command = study.command("align-report", root, top_level=True) + (f" --task {task}" if task != DEFAULT_TASK
                                                                          else "")
        doc.p(f"**Partial coverage** (of the study's {covered['finished']} finished multilingual runs, "
              f"{covered['aligned']} aligned): " + "; ".join(lacking) + f". `{command}` computes what is missing.")
    return bool(lacking)


def alignment_sections(doc: Doc, study: Study, root=None, out: str | Path = ".",
                       task: str = DEFAULT_TASK) -> list[Evidence] | None:
    """Append the alignment and transfer sections to a report `Doc`; figures go to `out`. Returns the
    evidence for claims 3, 8 and 9, or None (and adds nothing) when no run has alignment results yet."""
    out, paper = Path(out), study.compares_with_paper
    settings = collect(study, root, task)
    if not settings:
        return None
    clones = [s for s in settings if s.kind == "clone" and s.alignments]
    reals = [s for s in settings if s.kind == "real" and s.alignments]
    doc.h(2, "Alignment of the languages")
    bibles = all(a.get("probes", "").startswith("probe") for s in settings for a in s.alignments)  # (else own text)
    doc.p("Measured on held-out probes no language saw in training (`xling align`): for clones, windows of the "
          + ("probe books (Luke, Acts)" if bibles else "held-out text (the Bibles' probe books, your text's test "
             "split)") + " written in both languages, compared position by position; for a real pair, "
          + ("the same books verse-aligned" if bibles else "held-out parallel text (the Bibles' probe books verse by "
             "verse, your test files document by document)") + ", packed into sequences and matched token by "
          "token (maximum-weight matching of the layer-averaged cosine); each run's probes are named in its "
          "alignment.json (`probes`). The shuffled baseline pairs each sequence with the "
          "translation of the sequence half the probes away (unrelated text, not the next verse): how similar "
          "unrelated text looks in that layer. ± is the 95 % t-interval "
          "over seeds." + (" Paper values: GPT-small (12 layers) after 1.2B tokens, on other probe text (Europarl, "
                           "500 sequences of 128-512 tokens), its hidden states under fp16 autocast (ours under the "
                           "precision each run trained in); compare directions, not magnitudes." if paper else
                           " No published values are set beside (the study names no paper)."))
    _left_out_note(doc, settings)
    partial = _coverage_note(doc, study, root, task)
    evidence = (_hidden_clones(doc, clones, paper) if clones else []) + (_hidden_reals(doc, reals, paper) if reals
                                                                          else [])
    graded = [s for s in settings if any("gradient" in a for a in s.alignments)]
    if graded:
        evidence += _gradients(doc, graded, clones, out, paper)
    elif clones:  # (claim 3 is then judged on hidden states and embeddings alone: say so)
        evidence.append(Evidence("3", "gradients 90/10 > 50/50: not tested (the runs were aligned without gradients; "
                                      "`xling align-report` computes them)", NOT_TESTED))
    embedded = [s for s in clones if any("embeddings" in a for a in s.alignments)]
    if embedded:
        evidence += _embeddings(doc, embedded, out, paper)
    if any(len(s.history) > 1 for s in clones):
        evidence += _over_training(doc, clones, out)
    transfers = [s for s in settings if s.transfers]
    if transfers:
        evidence += _transfer(doc, transfers, clones, out, paper)
    if evidence:
        claims = sorted({e.claim for e in evidence})  # (9: real pairs only)
        doc.h(3, f"Alignment verdict (claim{'s' * (len(claims) > 1)} {', '.join(claims[:-1])}"
              f"{' and ' * (len(claims) > 1)}{claims[-1]} of the paper's §6)"
              + (" from the runs with results only (partial coverage, above)" if partial else ""))
        doc.ul([e.told for e in evidence])
    return evidence


def write_alignment_report(study: Study, root=None, out=None, compute: bool = True, task: str = DEFAULT_TASK,
                           transfer_steps: int = 300, log=None, workers: int | str = 1, **align_options) -> Path:
    """Compute what is missing (unless `compute` is False; `workers` runs at a time, see
    `compute_missing`), then write alignment.md and .html."""
    if compute:
        compute_missing(study, root, task, transfer_steps=transfer_steps, log=log, workers=workers, **align_options)
    out = Path(out or Path("reports") / study.name)
    doc = Doc()
    doc.h(1, f"Alignment report: {study.name}")
    doc.p(study.description)
    with svg_copies():  # every figure also as SVG, as in the study report
        found = alignment_sections(doc, study, root, out, task)
    if found is None:
        multilingual = [s for s in study.runs if s.mixture.multilingual]
        if compute or not multilingual:
            hint = f"it has no trained multilingual run there (`{study.command('run', root)}` trains them)"
        elif any(is_complete(s.run_dir(runs_root(root))) for s in multilingual):
            hint = "its runs are not aligned yet: run this command without --no-compute"
        else:
            hint = f"run `{study.command('run', root)}` first, then this command without --no-compute"
        raise XlingError(f"no run of study {study.name} has alignment results under {runs_root(root)}: {hint}")
    atomic_write_text(out / "alignment.md", doc.markdown())
    atomic_write_text(out / "alignment.html", doc.html(f"xling alignment report: {study.name}", base=out))
    return out / "alignment.md"


def alignment_headline(study: Study, root=None) -> list[str]:
    """The demo's alignment line: 90/10 against 50/50 under the centred cosine (mean over layers), with the
    paper's raw cosine beside it, where the study's clone runs have been aligned."""
    clones = [s for s in collect(study, root) if s.kind == "clone" and s.alignments]
    imb, bal = find(clones, "clone", 0.1), find(clones, "clone", 0.5)
    if not (imb and bal and measure_mean(imb, "centred") and measure_mean(bal, "centred")):
        return []
    centred = higher(imb, bal, lambda s: measure_mean(s, "centred"))
    raw = higher(imb, bal, mean_hidden)
    cell = lambda s, values: fmt_stat(stat(values(s)), ".3f")
    return [f"centred hidden cosine (language offsets removed; mean over layers): 90/10 "
            f"{cell(imb, lambda s: measure_mean(s, 'centred'))} vs 50/50 {cell(bal, lambda s: measure_mean(s, 'centred'))}; "
            f"90/10 higher: {centred.answer()}",
            f"the paper's raw cosine: 90/10 {cell(imb, mean_hidden)} vs 50/50 {cell(bal, mean_hidden)}; "
            f"90/10 higher: {raw.answer()}"]
