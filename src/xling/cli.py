"""`xling <command>`: parse, validate, call the library. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from .config import load_config, parse_override_value
from .errors import XlingError


def _threads_setup() -> None:
    """Before torch starts OpenMP: how its idle threads wait for the next parallel op.

    Measured on 2 cores (README, Performance): on an idle machine a short spin is ~12 % faster
    than sleeping at once; while another process keeps a core busy it is ~17 % slower, and
    OpenMP's default long spin is 2x slower. So: a short spin only when the load average says the
    machine is idle, else sleep at once. Settings already in the environment win.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    try:
        idle = os.getloadavg()[0] < 0.5
    except OSError:  # no load average on this platform
        idle = False
    if idle:
        os.environ["GOMP_SPINCOUNT"] = "3000"  # GNU OpenMP (torch's Linux builds): spins, then sleeps
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _split_overrides(argv: list[str]) -> tuple[list[str], dict]:
    """Take `--section.key VALUE` / `--section.key=VALUE` pairs out of argv before argparse sees them."""
    rest, overrides, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        key = arg[2:].partition("=")[0]
        if not (arg.startswith("--") and "." in key and not key.startswith(".")):
            rest.append(arg)
            i += 1
            continue
        if "=" in arg:
            value = arg.partition("=")[2]
        elif i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
        else:
            raise XlingError(f"override --{key} needs a value, e.g. --{key} VALUE")
        overrides[key] = parse_override_value(value)
        i += 1
    return rest, overrides


def _print_ppl_table(results: dict[str, dict], title: str) -> None:
    print(title)
    print(f"  {'language':<10} {'ppl':>10} {'loss':>8} {'tokens':>10}")
    for name, r in results.items():
        print(f"  {name:<10} {r['ppl']:>10.2f} {r['loss']:>8.4f} {r['tokens_scored']:>10,}")


# --------------------------------------------------------------------------- commands


def cmd_config(args, overrides) -> int:
    from .config import dump_yaml

    print(dump_yaml(load_config(args.config, overrides)), end="")
    return 0


def cmd_train(args, overrides) -> int:
    from .runs import RunDir
    from .train import Trainer

    if args.config is None and not args.resume:
        raise XlingError("give a config file (xling train CONFIG.yaml) or --resume RUN_DIR")
    if args.config and Path(args.config).is_dir():  # `xling train RUN_DIR --resume`
        args.out, args.config = args.config, None
    if args.config is None:
        if not args.out:
            raise XlingError("--resume without a config needs the run directory: xling train RUN_DIR --resume")
        cfg_path = RunDir(args.out).require().config_path
    else:
        cfg_path = args.config
    cfg = load_config(cfg_path, overrides)
    out = Path(args.out or Path("runs") / (cfg.name or Path(cfg_path).stem))
    info = Trainer(cfg, out).fit(resume=args.resume, progress=not args.quiet)
    if info["status"] != "completed":
        return 1
    if info.get("rank"):  # torchrun: rank 0 reports and evaluates
        return 0
    _print_ppl_table(info["valid"], f"validation perplexity ({out})")
    if not args.no_eval:
        return cmd_eval(argparse.Namespace(run_dir=str(out), split="test", max_tokens=None, device="auto"), {})
    return 0


def cmd_eval(args, overrides) -> int:
    from .evaluate import evaluate_run

    report, path = evaluate_run(args.run_dir, args.split, args.max_tokens, args.device)
    title = f"{args.split} perplexity (window {report['window']}, last {report['last_n']} scored) -> {path}"
    _print_ppl_table(report["languages"], title)
    return 0


def cmd_sample(args, overrides) -> int:
    import torch

    from .data import decode_ids, encode_text
    from .model import generate
    from .tokenizer import EOD_ID
    from .train import load_session

    session = load_session(args.run_dir, device=args.device)
    names = session.setup.names
    if args.language not in names:
        raise XlingError(f"unknown language '{args.language}': this run has {', '.join(names)}")
    lang = names.index(args.language)
    if args.prompt:
        prompt = encode_text(session.setup, lang, args.prompt)
    else:  # start a new document: the language's end-of-document id
        prompt = session.setup.table[lang][torch.tensor([EOD_ID])]
    gen = torch.Generator().manual_seed(args.seed)
    with session.autocast():
        out = generate(session.model, prompt.to(session.device), args.tokens, args.temperature, args.top_k, gen)
    print(f"[{args.language}] {args.prompt}{decode_ids(session.setup, lang, out.cpu())}")
    return 0


def cmd_teff(args, overrides) -> int:
    from .efficiency import teff_command

    return teff_command(args.mono, args.runs, args.out, args.form, args.bootstrap, args.seed)


def cmd_align(args, overrides) -> int:
    from .alignment import align_command

    w2v = {"vector_size": args.w2v_size, "window": args.w2v_window, "epochs": args.w2v_epochs} if args.word2vec else None
    return align_command(args.run_dirs, reuse=args.reuse, figure=args.figure, pair=args.pair,
                         sequences=args.sequences, grad_sequences=args.grad_sequences, batch_size=args.batch_size,
                         word2vec=w2v, device=args.device, figures=not args.no_figures)


def cmd_transfer(args, overrides) -> int:
    from .transfer import transfer_command

    return transfer_command(args.run_dir, args.task, args.train_language, steps=args.steps, batch_size=args.batch_size,
                            lr=args.lr, seed=args.seed, device=args.device)


def cmd_study(args, overrides) -> int:
    from .study import (
        available_studies,
        format_status,
        load_study,
        run_study,
        study_status,
    )

    if args.action == "list":
        for name, path in available_studies().items():
            try:
                study = load_study(str(path))
            except XlingError as exc:  # one broken file should not hide the others
                print(f"{name:<18} invalid: {exc}")
                continue
            print(f"{name:<18} {len(study.runs):>4} runs  {study.scale:<5}  {study.paper}")
        return 0
    if not args.name:
        raise XlingError(f"xling study {args.action} needs a study name: see `xling study list`")
    study = load_study(args.name)
    if args.action == "status":
        print(format_status(study, study_status(study, args.root)))
        return 0
    counts = run_study(study, args.root, workers=args.workers, engine=args.engine, db=args.db,
                       loggers=tuple(args.log or ()), reuse=not args.no_reuse)
    return 0 if counts["completed"] == counts["total"] else 1


def cmd_report(args, overrides) -> int:
    from .report import write_report
    from .study import load_study

    path, _ = write_report(load_study(args.name), args.root, args.out, args.db)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0


def cmd_demo(args, overrides) -> int:
    from .report import fmt_stat, headline, verdicts, write_report
    from .study import load_study, run_study

    study = load_study(args.study)
    workers = args.workers or max(1, min(os.cpu_count() or 1, 2))
    counts = run_study(study, args.root, workers=workers, db=args.db)
    path, analysis = write_report(study, args.root, args.out, args.db)
    print(f"\nreport: {path} and {path.with_suffix('.html')}")
    print("Test perplexity per language (geometric mean [95 % CI] over seeds) and token efficiency (mean ± 95 % CI):")
    print(f"  {'setting':<16} {'language':<9} {'ppl':>26} {'TEff':>14}")
    for summary in analysis.summaries:
        print(f"  {summary.setting:<16} {summary.label:<9} {fmt_stat(summary.ppl):>26} {fmt_stat(summary.teff):>14}")
    print("Token efficiency of the minority language (paper: GPT-small, 1.2B tokens):")
    print("\n".join(f"  {line}" for line in headline(analysis)))
    for v in verdicts(analysis):
        if v.status != "not tested":
            print(f"  claim {v.claim}: {v.status}")
    return 0 if counts["completed"] == counts["total"] else 1


def cmd_store(args, overrides) -> int:
    from .store import Store
    from .study import runs_root

    root = runs_root(args.root)
    store = Store(args.db or root / "xling.db")
    n = store.rebuild(root)
    print(f"indexed {n} run directories under {root} into {store.path}")
    return 0


def cmd_align_report(args, overrides) -> int:
    from .report_alignment import write_alignment_report
    from .study import load_study

    path = write_alignment_report(load_study(args.name), args.root, args.out, compute=not args.no_compute,
                                  task=args.task)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0


def cmd_bench(args, overrides) -> int:
    import torch

    from .bench import format_table, run_bench, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides)
    result = run_bench(cfg, steps=args.steps, warmup=args.warmup, hf=not args.no_hf,
                       log=lambda msg: print(msg, file=sys.stderr))
    print(format_table(result))
    if args.out:
        print(f"wrote {write_json(result, args.out)}")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xling", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the resolved config (defaults + file + overrides)")
    p.add_argument("config", nargs="?", help="YAML config file (optional)")
    p.set_defaults(func=cmd_config, overrides=True)

    p = sub.add_parser("train", help="train a model; --section.key VALUE overrides the config",
                       description="Train a run. Any config key can be overridden: --train.steps 200 --languages.p 0.5")
    p.add_argument("config", nargs="?", help="YAML config file (or a run directory with --resume)")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train, overrides=True)

    p = sub.add_parser("eval", help="per-language test perplexity of a run (writes eval.json)")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["test", "valid", "train"])
    p.add_argument("--max-tokens", type=int, default=None, help="score only a prefix of each language's stream")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="generate text in one language of a run")
    p.add_argument("run_dir")
    p.add_argument("--language", required=True, help="a language name of the run, e.g. EN2")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--tokens", type=int, default=60)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("teff", help="MLPE, MLTE and token efficiency from monolingual and run perplexities (CSV)")
    p.add_argument("--mono", required=True, help="CSV with language,fraction,ppl of monolingual runs")
    p.add_argument("--runs", required=True, help="CSV with run,language,fraction,ppl")
    p.add_argument("--out", help="output CSV (default: <runs>_teff.csv)")
    p.add_argument("--form", default="loss", choices=["loss", "paper"], help="scaling-law form (see docs)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_teff)
    p = sub.add_parser("align", help="hidden-state, gradient and embedding alignment of two languages (writes RUN_DIR/alignment/)",
                       description="Alignment metrics of each run on held-out parallel probes; several runs are printed side by side.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--pair", nargs=2, metavar=("LANG_A", "LANG_B"), help="the two languages (default: the first two)")
    p.add_argument("--sequences", type=int, default=500, help="probe sequences for hidden states")
    p.add_argument("--grad-sequences", type=int, default=100, help="probe sequences for gradients (2 backward passes each)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--word2vec", action="store_true", help="clones: also train the word2vec (CBOW) control on the run's training stream")
    p.add_argument("--w2v-size", type=int, default=0, help="word2vec vector size (0: the model width)")
    p.add_argument("--w2v-window", type=int, default=5)
    p.add_argument("--w2v-epochs", type=int, default=1, help="passes over the run's training stream")
    p.add_argument("--reuse", action="store_true", help="read a run's existing alignment.json instead of recomputing it")
    p.add_argument("--figure", help="also write a per-layer hidden-state plot of all runs to this PNG")
    p.add_argument("--no-figures", action="store_true", help="skip the per-run PNGs")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_align)
    p = sub.add_parser("transfer", help="fine-tune a classifier in one language, test zero-shot in every language",
                       description="Fine-tune a run on a classification task in one language and evaluate it in all "
                                   "languages (writes RUN_DIR/transfer/<task>-<language>.json).")
    p.add_argument("run_dir")
    p.add_argument("--task", default="bible-parts", help="bible-parts (built in) or a CSV / JSONL file with text, label "
                   "[, text2, split, text_<LANG>] columns")
    p.add_argument("--train-language", help="language to fine-tune in (default: the run's first language)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_transfer)

    root_help = "directory of run directories (default: $XLING_RUNS or ./runs)"
    db_help = "SQLite results store (default: ROOT/xling.db)"
    p = sub.add_parser("study", help="run a paper experiment (a grid of runs) or show its progress",
                       description="Studies are YAML files in studies/. `run` does only what is missing and can be "
                                   "interrupted at any point; running it again continues.")
    p.add_argument("action", choices=["run", "status", "list"])
    p.add_argument("name", nargs="?", help="study name (see `xling study list`) or a study YAML file")
    p.add_argument("--workers", type=int, default=1, help="runs trained at the same time (local processes or Ray tasks)")
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="ray: one Ray task per run (pip install 'xling[ray]'; RAY_ADDRESS for a cluster)")
    p.add_argument("--log", action="append", choices=["tensorboard", "wandb"], help="also export finished runs to TensorBoard / W&B (offline)")
    p.add_argument("--no-reuse", action="store_true",
                   help="train every missing run, even one whose twin (same config) is complete in another study")
    p.add_argument("--root", help=root_help)
    p.add_argument("--db", help=db_help)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="Markdown + HTML report of a study: tables, figures, verdict (reports/NAME/)")
    p.add_argument("name", help="study name or YAML file")
    p.add_argument("--out", help="output directory (default: reports/NAME)")
    p.add_argument("--root", help=root_help)
    p.add_argument("--db", help=db_help)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the headline experiment on the built-in corpus, then its report (minutes on a CPU)")
    p.add_argument("--study", default="headline-cpu", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help="runs trained at the same time (default: 2 on >= 2 cores)")
    p.add_argument("--out", help="report directory (default: reports/headline-cpu)")
    p.add_argument("--root", help=root_help)
    p.add_argument("--db", help=db_help)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("store", help="maintain the SQLite results store")
    p.add_argument("action", choices=["rebuild"], help="rebuild: re-index every run directory under ROOT")
    p.add_argument("--root", help=root_help)
    p.add_argument("--db", help=db_help)
    p.set_defaults(func=cmd_store)
    p = sub.add_parser("align-report", help="alignment and transfer report of a study (runs `align` and `transfer` where missing)",
                       description="For every finished bilingual run of a study: `xling align` (+ word2vec for clones) and "
                                   "`xling transfer` unless already done, then reports/NAME/alignment.md and .html.")
    p.add_argument("name", help="study name or YAML file")
    p.add_argument("--out", help="output directory (default: reports/NAME)")
    p.add_argument("--root", help="directory of run directories (default: $XLING_RUNS or ./runs)")
    p.add_argument("--task", default="bible-parts", help="transfer task: bible-parts or a CSV / JSONL file")
    p.add_argument("--no-compute", action="store_true", help="only report what the run directories already hold")
    p.set_defaults(func=cmd_align_report)

    p = sub.add_parser("bench", help="training-step tokens/s, MFU and the ratio to Hugging Face GPT-2 (--section.key VALUE overrides)",
                       description="Time xling's training step on a config's shapes (default: the demo config), the data path, "
                                   "a GEMM peak, and transformers' GPT2LMHeadModel on identical shapes. "
                                   "E.g. xling bench --model.preset cpu-m --train.batch_size 32 --out bench.json")
    p.add_argument("config", nargs="?", help="YAML config file (optional; overrides apply on top)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per model (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face comparison")
    p.add_argument("--out", help="also write the result as JSON here")
    p.set_defaults(func=cmd_bench, overrides=True)
    return parser


# Storage problems the user fixes (permissions, read-only or full disk): one line, exit 2.
_STORAGE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def main(argv: list[str] | None = None) -> int:
    _threads_setup()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        argv, overrides = _split_overrides(argv)
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise XlingError(f"unexpected argument '{extra[0]}': see xling {args.command} --help"
                             + ("; config overrides look like --section.key VALUE" if getattr(args, "overrides", False) else ""))
        if overrides and not getattr(args, "overrides", False):
            raise XlingError(f"xling {args.command} takes no config overrides (got --{next(iter(overrides))})")
        return args.func(args, overrides)
    except XlingError as exc:
        print(f"xling: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"xling: error: cannot write{where} ({exc.strerror}): use a writable output directory with free "
              "space; an interrupted run continues with --resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nxling: interrupted; a run continues from its last checkpoint with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
