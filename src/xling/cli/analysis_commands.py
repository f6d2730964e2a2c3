"""Commands that analyse trained runs or numbers: teff, align, transfer."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..analysis.scaling_law import law_params
from ..api import Run
from ..api import teff as teff_table
from ..config import GRAD_PRECISIONS, GRAD_SEQUENCES, PROBE_SEQUENCES
from ..errors import XlingError
from ..fsio import check_output_file
from .command import DEVICE_HELP, SEED, SEED_HELP, count, note_earlier_checkpoint, number
from .tables import alignment_table, efficiency_table, training_table, transfer_table


def teff_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mono", required=True, help="CSV with language,fraction,ppl of monolingual runs")
    p.add_argument("--runs", required=True, help="CSV with run,language,fraction,ppl")
    p.add_argument("--out", help="output CSV (default: <runs>_teff.csv)")
    p.add_argument("--form", default="loss", choices=["loss", "paper", "both"],
                   help="law form: loss (ln PPL = E + A x^-alpha), paper (1/PPL = c - a x^-b, the paper's) or both")
    p.add_argument("--bootstrap", type=count(0, 100_000), default=1000, help="bootstrap resamples for the intervals (default 1000)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the profile-likelihood intervals (~30-50 ms a row; for tables of thousands of rows)")


def teff(args, overrides) -> int:
    runs = Path(args.runs)
    out = Path(args.out or runs.with_name(f"{runs.stem}_teff.csv"))
    for option, given in (("--mono", args.mono), ("--runs", args.runs)):
        if out.resolve() == Path(given).resolve():
            raise XlingError(f"the output {out} is the {option} file: give --out another name (it would be replaced)")
    if args.out:
        check_output_file(args.out)
    rows = teff_table(args.mono, args.runs, args.form, args.bootstrap, args.seed, not args.no_profile)
    print(efficiency_table(rows))
    path = rows.write_csv(out)
    said = set()  # a note of every form's law (the ladder's own, say) once, without a form
    for (_, lang), fit in sorted(rows.laws.items()):
        law = fit.law
        params = law_params(law, "=")
        print(f"note: {lang} law ({law.form} form, {law.n_points} points): {params}", file=sys.stderr)
        for note in fit.notes:
            every = all(note in other.notes for (_, other_lang), other in rows.laws.items() if other_lang == lang)
            if (lang, note) not in said:
                print(f"note: {lang}{'' if every else f' ({law.form} form)'}: {note}", file=sys.stderr)
            said.add((lang, note))
    for r in rows:
        if r["warning"]:
            print(f"warning: run {r['run']}, {r['language']}: {r['warning']}", file=sys.stderr)
    print(f"wrote {path}")
    return 0


def align_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--pair", nargs=2, metavar=("LANG_A", "LANG_B"), help="the two languages (default: the first two)")
    p.add_argument("--sequences", type=count(1), default=PROBE_SEQUENCES,
                   help=f"probe sequences for hidden states (default {PROBE_SEQUENCES})")
    p.add_argument("--grad-sequences", type=count(0), default=GRAD_SEQUENCES,
                   help=f"probe sequences for gradients, 2 backward passes each (default {GRAD_SEQUENCES}; 0 skips them)")
    p.add_argument("--grad-precision", choices=GRAD_PRECISIONS, default="auto",
                   help="gradients in fp32 or under fp16 autocast; auto (default): the authors', fp16 on a GPU, fp32 on "
                        "a CPU (their code turns autocast off there)")
    p.add_argument("--batch-size", type=count(1, 2**16), default=16, help="probe sequences per forward pass (default 16)")
    p.add_argument("--word2vec", action="store_true", help="clones: also train the word2vec (CBOW) control on the run's training stream")
    p.add_argument("--w2v-size", type=count(0, 65536), default=0, help="word2vec vector size (0: the model width)")
    p.add_argument("--w2v-window", type=count(1, 1000), default=5, help="word2vec context window (default 5)")
    p.add_argument("--w2v-epochs", type=count(1, 1000), default=1, help="passes over the run's training stream")
    p.add_argument("--reuse", action="store_true", help="read a run's existing alignment.json instead of recomputing it")
    p.add_argument("--checkpoints", choices=["last", "all"], default="last",
                   help="all: also every checkpoint the run kept (train.keep_checkpoints log or all), over training")
    p.add_argument("--figure", help="also write a per-layer hidden-state plot of all runs to this PNG")
    p.add_argument("--no-figures", action="store_true", help="skip the per-run PNGs")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def align(args, overrides) -> int:
    """Compute (or, with --reuse, read) each run's alignment and print the runs side by side."""
    from ..analysis.alignment import stored_pair
    from ..analysis.alignment_plots import plot_hidden

    if args.figure:
        check_output_file(args.figure)
    w2v = {"vector_size": args.w2v_size, "window": args.w2v_window, "epochs": args.w2v_epochs} if args.word2vec else False
    computed, found = [], {}
    for run_dir in args.run_dirs:  # every run has the pair, before minutes of computing
        try:
            found[run_dir] = stored_pair(run_dir, args.pair)
        except XlingError as exc:  # which run, where the message does not say
            raise XlingError(str(exc) if str(run_dir) in str(exc) else f"{run_dir}: {exc}") from None
    for run_dir in args.run_dirs:
        path, stored = found[run_dir]
        start, read = time.perf_counter(), args.reuse and bool(stored)
        computed.append(Run(run_dir).align(
            args.pair, sequences=args.sequences, grad_sequences=args.grad_sequences, batch_size=args.batch_size,
            word2vec=w2v, figures=not args.no_figures, reuse=args.reuse, device=args.device,
            grad_precision=args.grad_precision))
        kept = computed[-1].get("kept") if not read else None
        note = f"; kept the earlier {' and '.join(kept)} results" if kept else ""
        print(f"{run_dir}: {'read' if read else 'wrote'} {path} ({time.perf_counter() - start:.1f} s{note})")
        note_earlier_checkpoint(Run(run_dir).info, computed[-1].get("step"))
        for said in computed[-1].get("notes", []):
            print(f"note: {run_dir}: {said}", file=sys.stderr)
    if args.checkpoints == "all":
        for run_dir in args.run_dirs:
            print(training_table(run_dir, Run(run_dir).align_over_training(
                args.pair, sequences=args.sequences, grad_sequences=args.grad_sequences, batch_size=args.batch_size,
                reuse=args.reuse, device=args.device, grad_precision=args.grad_precision)))
    labels = [Path(d).name for d in args.run_dirs]
    if len(set(labels)) < len(labels):  # same folder name in different places: use the paths
        labels = [str(d) for d in args.run_dirs]
    results = dict(zip(labels, computed))
    print(alignment_table(results))
    if args.figure:
        plot_hidden(results, Path(args.figure))
    return 0


def transfer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--task", default="bible-parts", help="bible-parts (built in) or a CSV / JSONL file with text, label "
                   "[, text2, split, text_<LANG>] columns")
    p.add_argument("--train-language", help="language to fine-tune in (default: the run's first language)")
    p.add_argument("--steps", type=count(1), default=300, help="fine-tuning steps (default 300)")
    p.add_argument("--batch-size", type=count(1, 2**16), default=32, help="examples per step (default 32)")
    p.add_argument("--lr", type=number(0, 10, above=True), default=3e-4, help="learning rate (default 3e-4)")
    p.add_argument("--seed", type=SEED, default=0, help=SEED_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def transfer(args, overrides) -> int:
    run = Run(args.run_dir)
    result = run.transfer(args.task, args.train_language, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, device=args.device)
    print(transfer_table(result))
    note_earlier_checkpoint(run.info, result["step"])
    for note in result.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return 0
