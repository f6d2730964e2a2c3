"""The paper's headline result in 20 lines: a rare language learns more per token.

English (EN1) and a perfect clone of it (EN2) share one model, mixed 50/50 and 90/10. A monolingual
ladder (EN1 alone on a share of the data) gives English's scaling law, which turns each language's
perplexity into a token efficiency: TEff = the monolingual data it would take to reach that
perplexity, per token of data the language got. The paper: EN2 at 10 % has TEff above 1, and above
EN2's at 50 %.

    python examples/headline.py     # the built-in corpus, a CPU-sized model: 1-3 minutes on 2 CPU cores

Runs go to runs/example-headline/; running it again reuses them. `xling demo` is the full study
(3 seeds, intervals, a report).
"""

import xling

BASE = {"corpus": {"name": "bible"}, "tokenizer": {"vocab_size": 2048}, "model": {"preset": "cpu-xs"},
        "train": {"batch_size": 16, "lr": 0.005, "min_lr": 3e-5, "warmup": 10}, "eval": {"max_tokens": 24576}}


def main(base=BASE, out="runs/example-headline", fractions=(0.1, 0.25, 0.5, 1.0), bootstrap=200) -> xling.TEffTable:
    def trained(name, overrides):  # train (once: called again, it finds the run finished)
        return xling.train(xling.Config(base, overrides), f"{out}/{name}", resume=True, progress=False)

    mono = []
    for f in fractions:  # the monolingual ladder: EN1 alone on a share f of the data
        run = trained(f"mono-{f}", {"languages.p": 0.0, "train.data_fraction": f})
        en1 = run.languages[0]
        mono.append({"language": en1, "fraction": f, "ppl": run.evaluation()[en1]["ppl"]})
    scored = []
    for p in (0.5, 0.1):  # EN2's share of one pass over the data
        run = trained(f"mix-{p}", {"languages.p": p})
        for language, share in zip(run.languages, (1 - p, p)):  # a clone is scored with its base language's law
            scored.append({"run": f"{language} at {share:.0%}", "language": en1, "fraction": share,
                           "ppl": run.evaluation()[language]["ppl"]})
    table = xling.teff(mono, scored, form="paper", bootstrap=bootstrap)  # the paper's law form, 95 % intervals
    for row in table:  # two ranges for the law's uncertainty: the bootstrap's, and the profile likelihood's
        print(f"{row['run']:<10}  test PPL {row['ppl']:8.1f}   TEff {row['teff']:5.2f}  bootstrap [{row['teff_lo']:.2f}, "
              f"{row['teff_hi']:.2f}], profile [{row['teff_profile_lo']:.2f}, {row['teff_profile_hi']:.2f}]")
    notes = [row["warning"] for row in table] + [note for fit in table.laws.values() for note in fit.notes]
    print("".join(f"note: {n}\n" for n in dict.fromkeys(notes) if n), end="")  # e.g. a degenerate fit of the ladder
    return table


if __name__ == "__main__":
    main()
