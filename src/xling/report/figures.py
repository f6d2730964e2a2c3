"""The figures of study reports: the monolingual ladder, paper-style line plots, and the alignment figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..notation import dotted_get
from ..plotting import pyplot, save_png
from ..study.spec import SEED_KEY, figure_selects
from .alignment_results import Setting, get, stat
from .published import PAPER_EMBEDDING, PAPER_TRANSFER
from .summary import Analysis, Summary

# Axis labels for the study grid keys a figure is drawn against (any other key is shown as it is written).
AXIS_NAMES = {
    "languages.p": "p (share of sequences in the non-base languages)",
    "languages.frac_clone": "share of cloned token ids (the rest are anchors)",
    "model.preset": "model size (preset)",
    "train.data_fraction": "training tokens (fraction of the budget T)",
}


# A published TEff (large and hollow: not hidden under ours at the same p), and ours under the paper's law form.
PAPER_MARKER = {"linestyle": "none", "marker": "D", "mfc": "none", "markersize": 10, "markeredgewidth": 1.5}
PAPER_FORM_LINE = {"linestyle": "--", "marker": "s", "mfc": "none"}


def _plain_numbers(axis) -> None:
    """A log axis labelled 50, 200 instead of 5×10^1, 2×10^2."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # minor ticks at 2, 3, 5 and 7 times a power of ten only: all nine run into each other
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "2357" else ""))


def figure_ladder(a: Analysis, path: Path) -> str | None:
    if not a.laws:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    lows, highs = [], []  # the runs' perplexities: a law that runs off (the paper's form near 1/PPL = 0) is cut
    for (group, lang), fit in a.laws.items():
        pts = [(r.fraction, r.ppl) for r in a.rows if r.mono and r.law == (group, lang)]
        xs, measured = np.array([p[0] for p in pts]), [p[1] for p in pts]
        name = a.law_name((group, lang))
        line = ax.plot(xs, measured, "o", label=f"{name} runs")[0]
        grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.2, 100)
        ax.plot(grid, fit.law.ppl(grid), "-", color=line.get_color(), alpha=0.7,
                label=f"{name} law ({fit.law.form} form, the verdicts')")
        for form, laws in sorted(a.laws_by_form.items()):  # the other form(s) beside, dashed: how well each fits
            if form != fit.law.form and (group, lang) in laws:
                with np.errstate(divide="ignore", invalid="ignore"):  # (the paper's form can reach 1/PPL <= 0)
                    other = np.asarray(laws[group, lang].law.ppl(grid), dtype=float)
                ax.plot(grid, np.where(np.isfinite(other) & (other > 0), other, np.nan), "--",
                        color=line.get_color(), alpha=0.6, label=f"{name} law ({form} form)")
        lows.append(min(measured))
        highs.append(max(measured))
    ax.set_xscale("log")
    ax.set_yscale("log")
    # the ladder's own fractions as plain labels (a log axis's minor labels run into each other)
    fractions = sorted({r.fraction for r in a.rows if r.mono and r.law in a.laws})
    ax.set_xticks(fractions, [f"{x:.2g}" for x in fractions])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_ylim(min(lows) / 1.5, max(highs) * 2)
    ax.set_xlabel("data fraction x (tokens / budget T)")
    ax.set_ylabel("test perplexity")
    _plain_numbers(ax.yaxis)
    ax.set_title("Monolingual ladder and fitted law")
    ax.legend(fontsize=8)
    return save_png(fig, path, dpi=110, crop=False)


def figure_lines(a: Analysis, spec: dict, path: Path) -> str | None:
    """A paper-style line plot: y (PPL or TEff) against one grid key, one line per language and other values."""
    x_key, y = spec["x"], spec.get("y", "ppl")
    roles = spec.get("roles")
    sel = [s for s in a.summaries if figure_selects(spec, s.spec) and (not roles or s.role in roles)]
    if not sel:
        return None
    plt = pyplot()
    from matplotlib.transforms import offset_copy

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x_values = list(dict.fromkeys(dotted_get(r.config, x_key) for r in a.study.runs if x_key in r.dims))
    categorical = any(isinstance(v, str) for v in x_values)
    pos = (lambda v: x_values.index(v)) if categorical else (lambda v: v)
    series = _series(sel, x_key)
    shown = []  # what the y axis must hold besides the measurements: MLPE at the p values that were run
    styles = set()  # the TEff plot's line styles besides the solid one, each explained once in the legend
    if len(series) > 10:  # the default cycle repeats after 10 colours
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    published = 0  # the lines with published values drawn so far
    for name, members in series.items():
        members.sort(key=lambda s: pos(dotted_get(s.spec.config, x_key)))
        xs = [pos(dotted_get(s.spec.config, x_key)) for s in members]
        stats = [getattr(s, y) for s in members]
        line = ax.errorbar(xs, [st.mean for st in stats], yerr=_error_bars(stats), marker="o", capsize=3, label=name)
        color = line[0].get_color()
        paper = [(x, getattr(s.paper, y)) for x, s in zip(xs, members) if s.paper and getattr(s.paper, y)]
        if paper and y == "teff":  # each line's a size smaller: equal published values (EN1, EN2 at 50/50) nest
            ax.plot(*zip(*paper), zorder=5, color=color, **{**PAPER_MARKER, "markersize": max(5, 10 - 2.5 * published)})
            published += 1
            styles.add("paper")
            # the published TEff is compared with ours under the paper's own law form: drawn beside, dashed
            forms = [s.teff_forms.get("paper") for s in members]
            ours = [f.mean if f else math.nan for f in forms]
            if not np.allclose(ours, [st.mean for st in stats], equal_nan=True):
                beside = offset_copy(ax.transData, fig=fig, x=4, units="points")  # its bars apart from the solid's
                ax.errorbar(xs, ours, yerr=_error_bars(forms), color=color, alpha=0.7,
                            capsize=2, transform=beside, **PAPER_FORM_LINE)
                styles.add("paper form")
        if spec.get("mlpe") and x_key == "languages.p":
            shown += _mlpe_curve(a, ax, members, color)
    if y == "teff":  # what each style means, in grey (the colours are the lines' languages)
        forms = _law_forms(a, sel)
        if forms:
            ax.plot([], [], "o-", color="grey", label=f"solid: ours, {' / '.join(forms)} law form (the verdicts')")
        if "paper form" in styles:
            ax.plot([], [], color="grey", label="dashed: ours, the paper's law form", **PAPER_FORM_LINE)
        if "paper" in styles:
            ax.plot([], [], color="grey", label="published (paper)", **PAPER_MARKER)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_ylim(bottom=0)  # TEff is never negative; a wide seed interval is cut at 0, not drawn below it
    else:  # perplexities span a wide range; keep MLPE curves from dwarfing the measurements
        ax.set_yscale("log")
        _plain_numbers(ax.yaxis)
        stats = [getattr(s, y) for s in sel]
        lows = [st.lo if st.n > 1 else st.mean for st in stats] + shown
        highs = [st.hi if st.n > 1 else st.mean for st in stats] + shown
        lows, highs = [v for v in lows if 0 < v < math.inf], [v for v in highs if 0 < v < math.inf]
        if lows and highs:  # every error bar and the MLPE at each p run, not the MLPE's tails at tiny shares
            ax.set_ylim(min(lows) / 1.15, max(highs) * 1.3)
    if categorical:
        ax.set_xticks(range(len(x_values)), [str(v) for v in x_values])
    ax.set_xlabel(AXIS_NAMES.get(x_key, x_key))
    ax.set_ylabel({"ppl": "test perplexity", "teff": "token efficiency (TEff)"}[y])
    ax.set_title((spec.get("title") or f"{y.upper() if y == 'ppl' else 'TEff'} vs {x_key.split('.')[-1]}")
                 + (f" (dashed: MLPE, {' / '.join(_law_forms(a, sel)) or 'no'} law form)" if spec.get("mlpe") else ""))
    if len(series) > 5:  # many lines: the legend goes beside the plot
        fig.set_size_inches(9.5, 4.2)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)
    return save_png(fig, path, dpi=110, crop=False)


def _law_forms(a: Analysis, sel: list[Summary]) -> list[str]:
    """The law forms of the plotted settings' laws, the verdicts' (none: no ladder, so no law)."""
    return sorted({a.verdict_form[s.law] for s in sel if s.law in a.verdict_form})


def _error_bars(stats) -> list[list[float]]:
    """matplotlib's yerr of seed intervals (none for one seed, or no Stat)."""
    return [[max(0, st.mean - st.lo) if st and st.n > 1 else 0 for st in stats],
            [max(0, st.hi - st.mean) if st and st.n > 1 else 0 for st in stats]]


def _series(sel: list[Summary], x_key: str) -> dict[str, list[Summary]]:
    """The lines of a plot: one per language label and the grid values other than x and the seed."""
    series: dict[str, list[Summary]] = {}
    several_groups = len({s.spec.group for s in sel}) > 1
    for s in sel:
        others = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in s.spec.dims.items() if k not in (x_key, SEED_KEY))
        if several_groups:  # e.g. a curriculum group next to static mixtures: say which line is which
            others = f"{s.spec.group}: {others}" if others else s.spec.group
        name = s.label + (f" ({others})" if others else "")
        series.setdefault(name, []).append(s)
    return series


def _mlpe_curve(a: Analysis, ax, members: list[Summary], color) -> list[float]:
    """What a monolingual model would reach with this language's share of the data, across p; returns its
    values at the p values that were run."""
    s = members[0]
    if s.law is None:
        return []
    fit = a.laws[s.law]
    k = s.key.num_clones
    # the budget fraction the whole run trained on: each member's fraction over its expected share
    total = float(np.mean([m.fraction / m.spec.mixture.expected_shares()[0 if m.role == "L1" else 1]
                           for m in members if 0 < m.key.p < 1]))
    ps = np.linspace(min(m.key.p for m in members), max(m.key.p for m in members), 50)
    share = ps / k if s.role == "L2" else 1 - ps
    run = np.array(sorted({m.key.p for m in members}))
    with np.errstate(over="ignore", divide="ignore"):  # tiny shares: the law's PPL is inf, which is not drawn
        ax.plot(ps, fit.law.ppl(share * total), ls="--", color=color, alpha=0.7)
        return [float(v) for v in np.atleast_1d(fit.law.ppl((run / k if s.role == "L2" else 1 - run) * total))]


# --------------------------------------------------------------------------- alignment figures


def _p_axis(ax, ps) -> None:
    """Log-scaled p axis labelled at the values of p that were run (no crowded minor labels)."""
    from matplotlib.ticker import NullFormatter  # matplotlib loads on first use (plotting.pyplot)

    ax.set_xscale("log")
    ax.set_xticks(sorted(set(ps)), [f"{p:g}" for p in sorted(set(ps))])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("p (share of the clone language)")


def figure_embeddings_by_p(settings: list[Setting], path: Path, paper: bool = True) -> str | None:
    """Clone-pair cosine against p, model and word2vec; `paper`: the paper's approximate values beside."""
    clones = [s for s in settings if s.kind == "clone" and not (s.schedule or s.pair)  # (one point per p)
              and any("embeddings" in a for a in s.alignments)]
    if len(clones) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ps = [s.p for s in clones]
    for group, style in (("embeddings", "-"), ("word2vec", "--")):
        for kind in ("input", "output"):
            ys = [stat(get(a, group, kind, "clone_pairs") for a in s.alignments).mean for s in clones]
            if all(math.isnan(y) for y in ys):
                continue
            line, = ax.plot(ps, ys, style, marker="o", label=f"{'model' if group == 'embeddings' else 'word2vec'} {kind}")
            base = [stat(get(a, group, kind, "all_pairs") for a in s.alignments).mean for s in clones]
            ax.plot(ps, base, ":", color=line.get_color(), lw=0.8)
    for kind, marker in (("input", "D"), ("output", "s")) if paper else ():
        pts = sorted(PAPER_EMBEDDING[kind].items())
        ax.plot([p for p, _ in pts], [v for _, v in pts], marker, color="grey", ls="none", label=f"paper {kind} (≈)")
    _p_axis(ax, ps + (list(PAPER_EMBEDDING["input"]) if paper else []))
    ax.set(ylabel="clone-pair cosine", title="Embedding similarity of clone pairs (dotted: all pairs)")
    ax.legend(fontsize=7)
    return save_png(fig, path)


def figure_by_frequency(settings: list[Setting], path: Path) -> str | None:
    clones = [s for s in settings if s.kind == "clone" and any("embeddings" in a for a in s.alignments)]
    if not clones:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    old_results = False
    for ax, kind in zip(axes, ("input", "output")):
        for s in clones:
            bins = [b for b in s.alignments[0]["embeddings"]["by_frequency"] if b["lo"] > 0]
            x = [math.sqrt(b["lo"] * b["hi"]) for b in bins]
            line, = ax.plot(x, [b[kind] for b in bins], marker=".", label=s.label)
            if all(f"{kind}_all_pairs" in b for b in bins):  # alignments computed before 2026-11-28 lack it
                baseline = [math.nan if b[f"{kind}_all_pairs"] is None else b[f"{kind}_all_pairs"] for b in bins]
                ax.plot(x, baseline, ":", color=line.get_color(), lw=0.8)
            else:
                old_results = True
        ax.set_xscale("log")
        ax.set(xlabel="training frequency (4 bins per decade)", title=f"{kind} embeddings")
    fig.suptitle("Clone-pair cosine by training frequency " + ("(no per-bin baselines: aligned before 2026-11-28; "
                 "rerun xling align)" if old_results else "(dotted: the bin's other pairs, from 5 clone pairs)"),
                 fontsize=10)
    axes[0].set_ylabel("clone-pair cosine")
    axes[1].legend(fontsize=7)
    return save_png(fig, path)


def figure_transfer(settings: list[Setting], path: Path, paper: bool = True) -> str | None:
    """Fine-tuned and zero-shot accuracy against p; `paper`: the paper's EN2 (GLUE) beside."""
    clones = [s for s in settings if s.kind == "clone" and not (s.schedule or s.pair) and s.transfers]  # (two languages)
    if len(clones) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.5))
    ps = [s.p for s in clones]
    names = list(clones[0].transfers[0]["accuracy"])  # the languages as the runs name them, fine-tuned first
    for role, index in ((f"{names[0]} (fine-tuned)", 0), (f"{names[1]} (zero-shot)", 1)):
        stats = [stat(list(t["accuracy"].values())[index] for t in s.transfers) for s in clones]
        ax.errorbar(ps, [st.mean for st in stats], yerr=_error_bars(stats), marker="o", capsize=3, label=role)
    chance = [stat(t["majority_baseline"] for t in s.transfers).mean for s in clones]
    # a wide pale band under the lines: a zero-shot line at chance lies on it and both stay visible
    ax.plot(ps, chance, color="grey", lw=6, alpha=0.3, zorder=0, label="majority class")
    if paper:
        pts = sorted(PAPER_TRANSFER["L2"].items())
        ax.plot([p for p, _ in pts], [v for _, v in pts], "D", color="grey", ls="none", label="paper EN2 (GLUE mean: other tasks, direction only)")
    _p_axis(ax, ps + (list(PAPER_TRANSFER["L2"]) if paper else []))
    ax.set(ylabel="accuracy", title="Zero-shot transfer")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the axes: it covers no point
    return save_png(fig, path)


def figure_over_training(settings: list[Setting], path: Path) -> str | None:
    """Raw and centred hidden cosine against training tokens, one line per setting (mean over seeds)."""
    tracked = [s for s in settings if len(s.history) > 1]
    if not tracked:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, (measure, title) in zip(axes, (("mean", "raw cosine (the paper's)"), ("centred", "centred cosine"))):
        for s in tracked:
            steps = sorted(s.history)
            tokens = [s.history[step][0]["tokens"] for step in steps]
            values = [stat(_hidden_mean(a, measure) for a in s.history[step]) for step in steps]
            line, = ax.plot(tokens, [v.mean for v in values], marker=".", label=s.label)
            ax.fill_between(tokens, [v.lo if v.n > 1 else v.mean for v in values],
                            [v.hi if v.n > 1 else v.mean for v in values], color=line.get_color(), alpha=0.15)
        plotted = [a[0]["tokens"] for s in tracked for a in s.history.values()]
        if max(plotted) >= 10 * min(plotted):
            ax.set_xscale("log")  # (over less than a decade, log ticks print on top of each other)
        ax.set(xlabel="training tokens", title=title)
    axes[0].set_ylabel("hidden-state cosine, mean over layers")
    axes[1].legend(fontsize=7)
    return save_png(fig, path)


def _hidden_mean(alignment: dict, measure: str) -> float | None:
    hidden = alignment["hidden"]
    return hidden["mean"] if measure == "mean" else hidden.get(measure, {}).get("mean")
