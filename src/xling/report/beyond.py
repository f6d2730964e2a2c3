"""Questions beyond the paper, judged like its claims (`claims.py`): many real languages at chosen shares
(study multilingual-cpu) and clones whose word order differs from their text's (study transforms-cpu).

Each question is a small function over the analysis (`summary.Analysis`) that returns its checks (`Check`) and
the lines that explain them; `answers` judges every question a study can test. Every TEff is a language's own:
against its own monolingual law (a reordered clone: the law of the base text in that word order), crediting
the language with its expected share of the run's tokens, as the paper does.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..data.bible import get_translation
from ..plotting import pyplot, save_png
from . import published
from .claims import Claim, ClaimResult, Judged
from .stats import Stat, fmt, fmt_interval, t_stat
from .summary import LADDER, Analysis, Row, find
from .verdict import Evidence, combine, combine_checks, compare, vs_one, vs_value

# Language families of the built-in Bibles' languages (by ISO code): what "related" means in question M2.
FAMILIES = {"en": "Germanic", "de": "Germanic", "fr": "Romance", "es": "Romance", "it": "Romance",
            "ru": "Slavic", "pl": "Slavic"}
DOMINANT = 0.5  # a language with at least this share dominates its run
SHARE_RATIO = 2.0  # M1 compares a language's TEff at uniform with shares at least this many times smaller or larger
PAPER_TEN_CLONES = "the paper's ten clones: TEff 1.67-1.69 at 10 % each, 3.56 at 5.6 % beside EN1 at 50 % (Table 1)"


# --------------------------------------------------------------------------- many languages: rows and shares


def _many(a: Analysis) -> list[Row]:
    """The scored rows of multilingual runs of many languages (languages.corpora) whose share is known."""
    return [r for r in a.rows if not r.mono and r.mix is not None and r.mix.many and math.isfinite(r.teff)
            and math.isfinite(share(r))]


def share(r: Row) -> float:
    """A row's language's expected share of its run's training sequences."""
    return r.mix.expected_shares()[r.mix.names.index(r.language)]


def family(r: Row) -> str:
    """The language family of a row's language ("" where unknown), from its run's corpus."""
    if r.spec.config["corpus"]["name"] != "bible":
        return ""  # your own text: its language is not known
    code = get_translation(r.spec.config["languages"]["corpora"][r.mix.names.index(r.language)]).lang
    return FAMILIES.get(code, "")


def _seed(r: Row) -> int:
    return int(r.spec.config["train"]["seed"])


def _by_seed(rows: list[Row]) -> dict[int, float]:
    """Mean TEff per seed (over the settings the rows come from)."""
    out = defaultdict(list)
    for r in rows:
        out[_seed(r)].append(r.teff)
    return {seed: float(np.mean(v)) for seed, v in sorted(out.items())}


def _settings(rows: list[Row]) -> dict[str, list[Row]]:
    out = defaultdict(list)
    for r in rows:
        out[r.spec.setting].append(r)
    return dict(out)


def _stat(rows: list[Row]) -> Stat:
    """TEff over seeds, the settings of one seed averaged first."""
    return t_stat(list(_by_seed(rows).values()))


def _setting_share(rows: list[Row]) -> float:
    return float(np.mean([share(r) for r in rows]))


def elasticity(rows: list[Row]) -> Stat:
    """How TEff scales with share: the slope b of ln TEff = b ln share + (one constant per language), fitted per
    seed over every (language, setting) of that seed, then a t-interval over seeds. b < 0: TEff falls as the
    share rises (b = -1 would mean a fixed number of monolingual-equivalent tokens whatever the share)."""
    slopes = []
    for seed in sorted({_seed(r) for r in rows}):
        mine = [r for r in rows if _seed(r) == seed and r.teff > 0]
        x, y = np.log([share(r) for r in mine]), np.log([r.teff for r in mine])
        langs = [r.language for r in mine]
        for lang in set(langs):  # within-language deviations: each language its own level
            sel = np.array([g == lang for g in langs])
            x[sel], y[sel] = x[sel] - x[sel].mean(), y[sel] - y[sel].mean()
        if (x ** 2).sum() > 0:
            slopes.append(float((x * y).sum() / (x ** 2).sum()))
    return t_stat(slopes)


def share_table(a: Analysis) -> list[dict]:
    """Per language and setting of a study of many languages: its share, PPL and TEff (rows for a report table)."""
    out, many = [], _many(a)
    for s in sorted((s for s in a.summaries if s.key.kind == "many"), key=lambda s: (s.label, s.fraction)):
        rows = [r for r in many if r.spec.setting == s.setting and r.label == s.label]
        if rows:
            out.append({"language": s.label, "setting": s.setting, "share": _setting_share(rows), "summary": s})
    return out


# --------------------------------------------------------------------------- M1: TEff against share


def share_question(a: Analysis, alignment: list[Evidence]) -> Judged:
    """Does a language's TEff fall as its share rises? Each language against itself: at its smallest share vs
    ~1/N (uniform), and at its largest vs uniform; plus the elasticity over every language and setting."""
    rows = _many(a)
    if not rows:
        return [], []
    tests, lines = [], []
    slope = elasticity(rows)
    tests.append(vs_value(slope, 0.0, above=False))
    lines.append(f"Elasticity of TEff with respect to share (ln TEff on ln share within each language, per seed): "
                 f"{fmt_interval(slope)} — below 0: {tests[-1].status}.")
    for lang in dict.fromkeys(r.language for r in rows):
        by_setting = _settings([r for r in rows if r.language == lang])
        uniform = [rs for rs in by_setting.values() if rs[0].mix.rule == "uniform"]
        if not uniform:
            continue
        uni, uni_share = _stat(uniform[0]), _setting_share(uniform[0])
        shares = {setting: _setting_share(rs) for setting, rs in by_setting.items()}
        # only shares far from uniform are judged (temperature's 0.135-0.154 around 1/7 are not a change of share)
        low = [r for s, rs in by_setting.items() if shares[s] <= uni_share / SHARE_RATIO for r in rs]
        high = [r for s, rs in by_setting.items() if shares[s] >= uni_share * SHARE_RATIO for r in rs]
        parts = [f"{lang}: TEff at share {uni_share:.3f} (uniform) {fmt_interval(uni)}"]
        for rows_at, smaller, word in ((low, False, "higher"), (high, True, "lower")):
            if rows_at:
                at = _stat(rows_at)
                tests.append(compare(at, uni, smaller=smaller))
                parts.append(f"at {_setting_share(rows_at):.3f} {fmt_interval(at)} ({word}: {tests[-1].status})")
        lines.append("; ".join(parts) + ".")
    lines.append(f"For scale: {PAPER_TEN_CLONES}.")
    return tests, lines


# --------------------------------------------------------------------------- M2: related languages


def _dominant(rows: list[Row]) -> dict[str, Row]:
    """setting -> a row of its dominant language, for settings where one language has >= DOMINANT."""
    return {r.spec.setting: r for r in rows if share(r) >= DOMINANT}


def related_question(a: Analysis, alignment: list[Evidence]) -> Judged:
    """Do related languages profit more from each other? The same minority at the same share under a dominant
    language of its own family vs one of another; the families' mean differences averaged, per seed, so that
    a dominant language that helps every language alike cancels out."""
    rows = _many(a)
    dominant = _dominant(rows)
    if len(dominant) < 2:
        return [], []
    tests, lines, deltas = [], [], defaultdict(dict)  # the balanced contrast only; family -> language -> {seed: delta}
    for lang in dict.fromkeys(r.language for r in rows):
        mine = [r for r in rows if r.language == lang and r.spec.setting in dominant and share(r) < DOMINANT]
        if not mine:
            continue
        fam = family(mine[0])
        if not fam:  # your own text, or a language FAMILIES does not list: neither related nor not
            lines.append(f"{lang}: its language family is not known, so it is not compared.")
            continue
        related = [r for r in mine if family(dominant[r.spec.setting]) == fam]
        other = [r for r in mine if family(dominant[r.spec.setting]) not in ("", fam)]
        names = lambda rs: "/".join(dict.fromkeys(dominant[r.spec.setting].language for r in rs))
        if not related or not other:  # no pair to compare (EN, DE; a dominant language as a minority): context
            lines.append(f"{lang} ({fam}) at share {_setting_share(mine):.3f}, no dominant "
                         "language of " + ("its family" if other else "another family") + ": " + "; ".join(
                             f"with {names(rs)} dominant TEff {fmt_interval(_stat(rs))}"
                             for rs in _settings(mine).values()) + " (context).")
            continue
        pair = compare(_stat(related), _stat(other))  # context: a teacher better for every language is not cancelled
        rel, oth = _by_seed(related), _by_seed(other)
        deltas[fam][lang] = {seed: rel[seed] - oth[seed] for seed in rel if seed in oth}
        lines.append(f"{lang} ({fam}) at share {_setting_share(mine):.3f}: TEff with {names(related)} dominant "
                     f"(related) {fmt_interval(_stat(related))} vs {names(other)} dominant {fmt_interval(_stat(other))}: "
                     f"{pair.answer()} (context, not judged alone).")
    seeds = sorted({s for langs in deltas.values() for d in langs.values() for s in d})
    balanced = [np.mean([np.mean([d[s] for d in langs.values() if s in d]) for langs in deltas.values()])
                for s in seeds]
    if len(deltas) >= 2:
        effect = vs_value(t_stat(balanced), 0.0)
        tests.insert(0, effect)
        lines.insert(0, f"Related minus unrelated dominant language, TEff of the same minority, averaged within and "
                        f"then across families ({', '.join(deltas)}): {fmt_interval(t_stat(balanced))} — above 0: "
                        f"{effect.status}.")
    lines.append("What this can and cannot show: one dominance level (70 % vs 5 %), two families with a related "
                 "pair each (Romance: FR with ES and IT; Slavic: RU with PL), and vocabularies that share no id, so "
                 "a gain passes through the model, never through shared tokens. Relatedness here comes with script "
                 "(RU is Cyrillic, the others Latin) and with the translations' eras (Diodati 1649, Gdańska 1632): "
                 "a difference cannot be pinned on grammar alone, and no difference at this scale does not rule one "
                 "out at a larger one.")
    return tests, lines


# --------------------------------------------------------------------------- T1: word order


def order_question(a: Analysis, alignment: list[Evidence]) -> Judged:
    """Does the minority's gain at 90/10 survive a change of word order? For each word order of the clone: its
    TEff at 90/10 above 1, and above its TEff at 50/50 (the paper's direction), beside the plain clone's."""
    clones = lambda **kw: find(a.summaries, "L2", kind="clone", num_clones=1, frac_clone=1.0, schedule="", **kw)
    orders = sorted({s.key.order for s in clones() if s.key.order})
    if not orders:
        return [], []
    tests, lines = [], []
    plain = {p: next(iter(clones(p=p, order="")), None) for p in (0.1, 0.5)}
    for order in ["", *orders]:
        s90, s50 = next(iter(clones(p=0.1, order=order)), None), next(iter(clones(p=0.5, order=order)), None)
        if s90 is None:
            continue
        gain, above = vs_one(s90.teff), compare(s90.teff, s50.teff) if s50 else None
        name = f"EN2 {order}" if order else "plain EN2 (the paper's clone)"
        paper = {p: published.lookup(published.Setting("clone", p, "", 1, 1.0, "", 1.0, "small"), "L2")
                 for p in (0.1, 0.5)}
        text = (f"{name}: TEff at 90/10 {fmt_interval(s90.teff)}, above 1: {gain.status}"
                + (f"; at 50/50 {fmt_interval(s50.teff)}, 90/10 higher: {above.status}" if above else "")
                + (f" (paper, GPT-small 1x: {paper[0.1].teff:.2f} at 90/10, {paper[0.5].teff:.2f} at 50/50)"
                   if not order and all(paper.values()) else ""))
        if order:
            tests.append(gain if above is None else combine_checks(gain, above))
            if plain[0.1]:
                d = compare(s90.teff, plain[0.1].teff)
                text += f"; against the plain clone at 90/10: {d.answer()}"
        maj = next(iter(find(a.summaries, "L1", kind="clone", p=0.1, order=order, schedule="")), None)
        if maj:
            text += f"; majority EN1 at 90/10 TEff {fmt_interval(maj.teff)}"
        lines.append(text + ".")
    lines.append("A reordered clone is scored against its own law (EN2 alone, p = 1, in that word order), so its "
                 "TEff says how much English in the original order helped it, per token, beyond what its own data "
                 "gives; the plain clone uses the English law, as in the paper.")
    return tests, lines


QUESTIONS: tuple[Claim, ...] = (
    Claim("M1", "Many languages: a language's TEff falls as its share of the training data rises.", share_question),
    Claim("M2", "Many languages: a minority profits more from a dominant language of its own family (FR/ES/IT, "
                "RU/PL) than from an unrelated one.", related_question),
    Claim("T1", "Word order: the minority's gain at 90/10 (TEff above 1, and above 50/50) survives when the clone's "
                "words are inverted or permuted within each sentence.", order_question),
)


def answers(a: Analysis, alignment: list[Evidence] | None = None) -> list[ClaimResult]:
    """Each question the study can test, judged by the seed intervals (the others are left out)."""
    out = []
    for q in QUESTIONS:
        tests, evidence = q.judge(a, alignment or [])
        if tests or evidence:
            out.append(ClaimResult(q.id, q.text, combine([t.status for t in tests]), tests, evidence))
    return out


def figure_shares(a: Analysis, path) -> str | None:
    """TEff against share, one line per language (log-log), for studies of many languages."""
    table = share_table(a)
    if not table:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for lang in dict.fromkeys(t["language"] for t in table):
        mine = sorted((t for t in table if t["language"] == lang), key=lambda t: t["share"])
        stats = [t["summary"].teff for t in mine]
        err = [[max(0, st.mean - st.lo) if st.n > 1 else 0 for st in stats],
               [max(0, st.hi - st.mean) if st.n > 1 else 0 for st in stats]]
        ax.errorbar([t["share"] for t in mine], [st.mean for st in stats], yerr=err, marker="o", capsize=3,
                    label=lang, alpha=0.85)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("share of the training sequences")
    ax.set_ylabel("token efficiency (TEff, own law)")
    ax.set_title("TEff against share, per language (mean ± 95 % CI over seeds)")
    ax.legend(fontsize=7, ncol=2)
    return save_png(fig, path, dpi=110, crop=False)


def share_rows(a: Analysis) -> list[list]:
    """The per-language table of a study of many languages: language, setting, share, PPL, TEff (verdict form and
    the paper's), seeds."""
    return [[t["language"], t["setting"], fmt(t["share"], ".3f"), fmt_interval(t["summary"].ppl),
             fmt_interval(t["summary"].teff), fmt_interval(t["summary"].teff_forms["paper"]),
             fmt_interval(t["summary"].teff_forms[LADDER]), t["summary"].teff.n,
             "†" if t["summary"].warnings else ""] for t in share_table(a)]
