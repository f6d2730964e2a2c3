"""Commands on studies: study (run, status, list), report, demo, store, align-report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..api import Study
from ..config import GRAD_PRECISIONS
from ..errors import XlingError, for_terminal
from ..fsio import check_output_file, make_dirs
from .command import DB_HELP, LOG_HELP, LOGGERS, ROOT_HELP, WORKERS, count
from .tables import status_table


def _existing(root: str | None) -> str | None:
    """A --root given to read from must exist (a typo would otherwise read as 'nothing has run')."""
    if root is not None and not Path(root).is_dir():
        raise XlingError(f"--root {root} is not a directory: pass the directory `xling study run` wrote runs into "
                         "(a study not run yet has nothing there: `xling study run` creates it)")
    return _above_studies(root)


def _above_studies(root: str | None) -> str | None:
    """--root holds a folder per study (root/STUDY/RUN): a study's own folder given instead is refused."""
    if root is not None and Path(root).is_dir() and any((c / "study.json").is_file() for c in Path(root).iterdir()):
        raise XlingError(f"--root {root} holds a study's runs itself: pass its parent ({Path(root).resolve().parent}), the "
                         "directory `xling study run` writes runs into")
    return root


def study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["run", "status", "list", "sbatch"],
                   help="sbatch: print a SLURM job-array script that runs the study on the nodes of the array")
    p.add_argument("name", nargs="?", help="study name (see `xling study list`) or a study YAML file")
    p.add_argument("--workers", type=WORKERS, default=None,
                   help="runs trained at the same time (local processes or Ray tasks; default: one per GPU place "
                        "with --gpus; else, on the CPU, one per usable core, at most one per run and what memory "
                        "holds; runs on a GPU and Ray tasks: 1)")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="ray: one Ray task per run (pip install 'xling[ray]'; RAY_ADDRESS for a cluster)")
    p.add_argument("--gpus", type=gpu_list, help="auto (every visible GPU) or GPU numbers 0,1,2,3: one worker per GPU, "
                   "each with its own CUDA_VISIBLE_DEVICES (with --engine ray: auto, and runs ask Ray for GPUs)")
    p.add_argument("--runs-per-gpu", type=count(1, 64), default=1, help="workers sharing each GPU (default 1)")
    p.add_argument("--log", action="append", choices=LOGGERS, help=LOG_HELP)
    p.add_argument("--no-reuse", action="store_true",
                   help="train every missing run, even one whose twin (same config) is complete in another study")
    p.add_argument("--no-wait", action="store_true",
                   help="leave runs another process is training to it instead of waiting (SLURM arrays)")
    p.add_argument("--array", type=count(1, 100_000), default=None,
                   help="sbatch: tasks (nodes) in the job array (default 2, or 1 for a study of one run; at most its runs)")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--db", help=DB_HELP)


# The options of `xling study`, their defaults, and the actions each applies to (another action refuses it given).
_STUDY_OPTIONS = {"workers": (None, "run sbatch"), "engine": ("local", "run"), "gpus": (None, "run sbatch"),
                  "runs_per_gpu": (1, "run sbatch"), "log": (None, "run sbatch"), "no_reuse": (False, "run"),
                  "no_wait": (False, "run"), "array": (None, "sbatch"), "root": (None, "run status sbatch"),
                  "db": (None, "run")}


def _refuse_options_that_do_not_apply(args) -> None:
    for key, (default, actions) in _STUDY_OPTIONS.items():
        if getattr(args, key) != default and args.action not in actions.split():
            *others, last = actions.split()
            raise XlingError(f"xling study {args.action} takes no --{key.replace('_', '-')} (it applies to xling study "
                             f"{', '.join(others) + ' and ' if others else ''}{last})")


def gpu_list(text: str):
    """An argparse type: --gpus auto or 0,1,2 (checked against the machine when the study runs)."""
    from ..study.placement import parse_gpus

    try:
        return parse_gpus(text)
    except XlingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def study(args, overrides) -> int:
    from ..recipes import packaged
    from ..study.spec import available_studies, load_study, replaces_shipped

    _refuse_options_that_do_not_apply(args)
    if args.action == "list":
        if args.name:
            raise XlingError(f"xling study list takes no study name (got '{args.name}'): "
                             f"`xling study status {args.name}` shows a study's runs")
        studies, shipped = available_studies(), packaged("studies")
        width = max(map(len, studies), default=0) + 1
        for name, path in studies.items():
            try:
                found = load_study(name)  # (by name, as every other command finds it: its file must answer to it)
            except XlingError as exc:  # one broken file should not hide the others
                print(f"{name:<{width}} invalid: {exc}")
                continue
            length, tokens, fixed = found.training_length()
            trains = (f"{length:6.1f} x 1x" + (f", {tokens / 1e9:5.1f}B tokens" if tokens else " " * 15)
                      + (f" + {fixed} runs of fixed steps" if fixed else ""))
            replacing = ", replacing xling's" if replaces_shipped(path) else ""
            yours = "" if path == shipped.get(name) else f"  [yours: {path}{replacing}]"
            print(f"{name:<{width}} {len(found.runs):>4} {'run ' if len(found.runs) == 1 else 'runs'}  {found.scale:<5}  "
                  f"{trains}  {found.paper}{yours}")
        return 0
    if not args.name:
        raise XlingError(f"xling study {args.action} needs a study name: see `xling study list`")
    if args.action == "status":
        found = Study(args.name, _existing(args.root))
        print(for_terminal(status_table(found, found.status()), lines=True))
        return 0
    if args.action == "sbatch":
        from ..study.slurm import sbatch_script
        from ..study.spec import runs_root

        chosen = load_study(args.name)
        gpus = None if args.gpus is None else args.gpus if args.gpus == "auto" else ",".join(map(str, args.gpus))
        tasks = args.array or min(2, len(chosen.runs))
        script = sbatch_script(chosen, tasks, _above_studies(args.root), args.workers, gpus, args.runs_per_gpu,
                               tuple(args.log or ()))
        make_dirs(runs_root(args.root))  # where the tasks' output files go
        print(script, end="")
        return 0
    counts = Study(args.name, _above_studies(args.root), args.db).run(
        args.workers or "auto", engine=args.engine, gpus=args.gpus, runs_per_gpu=args.runs_per_gpu, loggers=args.log or (),
        reuse=not args.no_reuse, wait=not args.no_wait, log=print)
    return 0 if counts["completed"] + counts.get("elsewhere", 0) == counts["total"] else 1


def report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name or YAML file")
    p.add_argument("--out", help="output directory (default: reports/NAME)")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--screenshot", action="store_true",
                   help="also write report.png, the page as a headless Chromium shows it (needs one: "
                        "apt-get install chromium-headless-shell)")
    p.add_argument("--task", default="bible-parts", help="the transfer task whose results (xling align-report "
                   "--task) the report shows: bible-parts or a CSV / JSONL file")


def report(args, overrides) -> int:
    if args.out:
        check_output_file(args.out, directory=True)
    path = Study(args.name, _existing(args.root), args.db).report(args.out, screenshot=args.screenshot, task=args.task)
    print(f"wrote {path} and {path.with_suffix('.html')} (figures as PNG and SVG beside them)")
    if args.screenshot:
        print(f"wrote {path.with_suffix('.png')}")
    return 0


def demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", default="headline-cpu", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=WORKERS, help="runs trained at the same time (default: one per usable core, "
                   "at most one per run and what memory holds)")
    p.add_argument("--out", help="report directory (default: reports/headline-cpu)")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--db", help=DB_HELP)


def demo(args, overrides) -> int:
    from ..report.alignment_report import alignment_headline
    from ..report.alignment_results import analyse_trained_run, compute_missing
    from ..report.claims import claim_lines, headline
    from ..report.stats import fmt_stat
    from ..report.study_report import write_report
    from ..study.runner import run_study
    from ..study.spec import load_study, replaces_shipped

    chosen = load_study(args.study)
    if chosen.path is not None and replaces_shipped(chosen.path):  # (its numbers are not the README's)
        print(f"note: {args.study} is your {chosen.path}, which replaces xling's study of that name", file=sys.stderr)
    # hidden-state alignment only (seconds per run), for the report's alignment section and the line below: each
    # bilingual run's by the worker that trained it, right after, while the others train; here what is still missing
    # (runs trained before, an alignment that failed in its worker)
    align = {"grad_sequences": 0, "figures": False}
    counts = run_study(chosen, args.root, args.workers or "auto", db=args.db, log=print,
                       then=(analyse_trained_run, None, False, 0, align))
    compute_missing(chosen, args.root, task=None, word2vec=False, log=print, **align)
    path, analysis = write_report(chosen, args.root, args.out, args.db)
    print(f"\nreport: {path} and {path.with_suffix('.html')}")
    print("Test perplexity per language (geometric mean [95 % CI] over seeds) and token efficiency (mean ± 95 % CI; "
          "each language credited with its expected share, as in the paper):")
    print(f"  {'setting':<16} {'language':<9} {'ppl':>26} {'TEff (paper form)':>18} {'TEff (loss form)':>17}")
    for s in analysis.summaries:
        print(f"  {s.setting:<16} {s.label:<9} {fmt_stat(s.ppl):>26} {fmt_stat(s.teff_forms['paper']):>18} "
              f"{fmt_stat(s.teff_forms['loss']):>17}")
    print("Token efficiency of the second language, the minority at 90/10 (paper: GPT-small, 1.2B tokens):")
    print("\n".join(f"  {line}" for line in headline(analysis)))
    print("Alignment of the two languages (beyond the paper's measure, and the paper's):")
    print("\n".join(f"  {line}" for line in alignment_headline(chosen, args.root)))
    print("\n".join(f"  {line}" for line in claim_lines(analysis)))
    return 0 if counts["completed"] == counts["total"] else 1


def store_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["rebuild"], help="rebuild: re-index every run directory under ROOT")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--db", help=DB_HELP)


def store(args, overrides) -> int:
    from ..study.spec import runs_root
    from ..study.store import STORE_NAME, Store

    root = runs_root(_existing(args.root))
    results = Store(args.db or root / STORE_NAME)
    n = results.rebuild(root)
    print(f"indexed {n} run directories under {root} into {results.path}")
    return 0


def align_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name or YAML file")
    p.add_argument("--out", help="output directory (default: reports/NAME)")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--task", default="bible-parts", help="transfer task: bible-parts or a CSV / JSONL file")
    p.add_argument("--no-compute", action="store_true", help="only report what the run directories already hold")
    p.add_argument("--grad-sequences", type=count(0), help="probe sequences for gradients (default: 500, the authors', "
                   "for a paper-scale study, else 100)")
    p.add_argument("--grad-precision", choices=GRAD_PRECISIONS, default="auto",
                   help="gradients in fp32 or under fp16 autocast; auto (default): the authors', fp16 on a GPU, fp32 on "
                        "a CPU. Named, it recomputes gradients taken in the other")
    p.add_argument("--pairs", choices=("first", "all"), default="first",
                   help="first (default): each run's first two languages; all: every pair of a run of more languages "
                        "too (alignment/pairs/A+B/ in the run, a row each in the report)")
    p.add_argument("--workers", type=WORKERS, help="runs analysed at the same time (default: as `xling study "
                   "run`, one per usable core, at most one per run needing analyses and what memory holds)")


def align_report(args, overrides) -> int:
    path = Study(args.name, _existing(args.root)).align_report(
        args.out, compute=not args.no_compute, task=args.task, workers=args.workers or "auto",
        grad_sequences=args.grad_sequences, grad_precision=args.grad_precision, pairs=args.pairs)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0


def export_logs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a run directory, or a study name / YAML file (its complete runs under --root)")
    p.add_argument("--log", action="append", choices=LOGGERS, required=True,
                   help="tensorboard (RUN_DIR/tensorboard/), wandb (an offline run in RUN_DIR/wandb/) or csv "
                        "(RUN_DIR/metrics.csv); repeatable")
    p.add_argument("--root", help=ROOT_HELP)


def export_logs(args, overrides) -> int:
    from ..study.exports import export_run
    from ..study.spec import load_study, runs_root
    from ..study.state import is_complete
    from ..train.live_log import missing_package
    from ..train.lock import is_locked, lock_holder
    from ..train.rundir import RunDir

    loggers = tuple(dict.fromkeys(args.log))
    for name in loggers:  # (training goes on without such a logger; exporting to it is all this command does)
        if reason := missing_package(name):
            raise XlingError(f"--log {name}: {reason}")
    target = Path(args.target)
    if target.is_dir():  # a run directory
        RunDir(target).require()
        if is_locked(target):
            raise XlingError(f"{target} is training now (process {lock_holder(target) or '?'}): export its logs when "
                             "it has finished, or train with --log to log it as it goes")
        dirs = [target]
    elif "/" in args.target and target.suffix not in (".yaml", ".yml"):  # a path, not a study's name or file
        raise XlingError(f"{target} does not exist: give a run directory, or a study's name or YAML file")
    else:
        try:
            chosen = load_study(args.target)
        except XlingError as exc:  # (a run directory's name mistyped reads as a study's)
            if target.suffix in (".yaml", ".yml"):
                raise
            raise XlingError(f"no run directory {target} exists, and {exc}") from None
        root = runs_root(_existing(args.root))
        dirs = [s.run_dir(root) for s in chosen.runs if is_complete(s.run_dir(root))]
        if not dirs:
            raise XlingError(f"study {chosen.name} has no complete runs under {root}: run `xling study run "
                             f"{chosen.name}` first")
    for name in loggers:
        for run_dir in dirs:
            export_run(run_dir, name, strict=True)
        where = {"tensorboard": "tensorboard/", "wandb": "wandb/", "csv": "metrics.csv"}[name]
        print(f"{name}: wrote {where} in {len(dirs)} run director{'y' if len(dirs) == 1 else 'ies'}"
              + (f" (tensorboard --logdir {dirs[0].parent if len(dirs) > 1 else dirs[0]})" if name == "tensorboard" else ""))
    return 0
