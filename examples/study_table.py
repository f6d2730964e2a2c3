"""A study's results as a table and a figure: token efficiency against a language's share of the data.

    python examples/study_table.py                   # the demo's study (headline-cpu): 2-4 min if not yet run
    python examples/study_table.py figure1-cpu       # any study: a name from `xling study list`, or a YAML file

`Study.results()` gives one row (a dict) per run and language, `level="setting"` one per setting over
seeds; `frame=True` makes either a pandas DataFrame (with pandas installed), e.g.
``study.results(frame=True).groupby(["setting", "language"])["teff"].mean()``.
"""

import sys

import matplotlib.pyplot as plt

import xling


def main(study="headline-cpu", root=None, out="teff.png", workers=2):
    study = xling.Study(study, root=root)
    study.run(workers=workers)                      # trains only what is missing
    rows = study.results(level="setting")           # one row per setting and language, over seeds
    # teff: the verdict's law form; a published TEff is compared with ours under the paper's own form (teff_paper)
    print(f"{'setting':<28} {'language':<9} {'share':>6} {'test PPL':>9} {'TEff [95 % CI]':>22} "
          f"{'paper form':>10} {'paper':>6}")
    for r in rows:
        interval = f"[{r['teff_lo']:.2f}, {r['teff_hi']:.2f}]" if r["teff_lo"] is not None else "(one seed)"
        teff = f"{r['teff']:.2f} {interval}" if r["teff"] is not None else "-"
        ours = f"{r['teff_paper']:.2f}" if r["teff_paper"] is not None else "-"
        paper = f"{r['teff_published']:.2f}" if r["teff_published"] is not None else ""
        print(f"{r['setting']:<28} {r['language']:<9} {r['fraction']:>6.2f} {r['ppl']:>9.1f} {teff:>22} "
              f"{ours:>10} {paper:>6}")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for language in dict.fromkeys(r["language"] for r in rows if not r["monolingual"]):
        points = sorted((r["fraction"], r["teff"], r["teff_lo"], r["teff_hi"]) for r in rows
                        if r["language"] == language and not r["monolingual"] and r["teff"] is not None)
        if points:
            x, y, lo, hi = map(list, zip(*points))
            below = [a - b if b is not None else 0 for a, b in zip(y, lo)]  # one seed: no interval to draw
            above = [b - a if b is not None else 0 for a, b in zip(y, hi)]
            ax.errorbar(x, y, yerr=[below, above], marker="o", capsize=3, label=language)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")  # TEff 1: as efficient as monolingual training
    ax.set(xlabel="share of the training data", ylabel="token efficiency (TEff)", title=study.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main(*sys.argv[1:2])
