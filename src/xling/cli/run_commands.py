"""Commands on one run: config, train, eval, sample, bench.

Library modules are imported inside the commands: `xling --help` and `xling study list` then
start without loading PyTorch.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import textwrap
from pathlib import Path

from ..api import Config, Run
from ..config import RunConfig, load_config
from ..errors import XlingError, for_terminal
from ..fsio import check_output_file, read_json
from .command import DEVICE_HELP, LOG_HELP, LOGGERS, SEED, SEED_HELP, count, note_earlier_checkpoint, number
from .tables import bench_table, ppl_table, runs_status_table


def config_sections() -> str:
    """The `--help` epilog of commands that take a config: its sections and their keys."""
    lines = ["config sections (override any key as --section.key VALUE; `xling config [CONFIG]` prints every key",
             "with its value, `xling config --list` the packaged configs):"]
    defaults = RunConfig()
    for section in dataclasses.fields(RunConfig):
        value = getattr(defaults, section.name)
        keys = [f.name for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else ["(the run's name)"]
        lines += textwrap.wrap(", ".join(keys), 100, initial_indent=f"  {section.name:<10} ", subsequent_indent=" " * 13)
    return "\n".join(lines)


# --------------------------------------------------------------------------- config


def config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file or packaged config name (optional)")
    p.add_argument("--list", action="store_true", help="list the packaged configs")


def config(args, overrides) -> int:
    from ..recipes import packaged

    if args.list:
        for name, path in packaged("configs").items():
            print(f"{name:<18} {path}")
        return 0
    cfg = Config(args.config, overrides)
    _ = cfg.language_names  # the translations exist, mix and transforms name languages (as `train` checks)
    print(cfg.to_yaml(), end="")
    return 0


# --------------------------------------------------------------------------- train


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file or packaged config name (or a run directory with --resume)")
    p.add_argument("--out", help="run directory (default: $XLING_RUNS or ./runs, then the config's name)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--log", action="append", choices=LOGGERS, help=LOG_HELP)


def train(args, overrides) -> int:
    from ..api import train as train_run
    from ..api.configs import unwrap
    from ..api.runs import default_run_dir
    from ..identity import resolve_relative
    from ..recipes import packaged
    from ..train.distributed import world_from_env
    from ..train.lock import refuse_if_trained_elsewhere
    from ..train.rundir import RunDir
    from ..train.session import pick_device

    if args.config is None and not args.resume:
        raise XlingError("give a config file (xling train CONFIG.yaml) or --resume RUN_DIR")
    if args.config and Path(args.config).is_dir():  # `xling train RUN_DIR --resume`
        if not args.resume and not RunDir(args.config).exists():
            raise XlingError(f"{args.config} is a directory without a run in it (no config.yaml): give a config file "
                             "(xling train CONFIG.yaml), or a run directory to resume (xling train RUN_DIR --resume)")
        if args.out and Path(args.out).resolve() != Path(args.config).resolve():
            raise XlingError(f"{args.config} is a run directory, which continues where it is: drop --out {args.out} "
                             "(--out names the run directory of a config)")
        args.out, args.config = args.config, None
    elif args.config and args.resume and not args.out:
        what = ("a file" if Path(args.config).exists() else "a packaged config" if args.config in packaged("configs")
                else None)
        raise XlingError(f"{args.config} is {what}, not a run directory: resume with xling train RUN_DIR --resume (or "
                         "CONFIG --out RUN_DIR --resume)" if what else f"{args.config} does not exist: resume with "
                         "xling train RUN_DIR --resume, RUN_DIR a run directory")
    if args.config is None:
        if not args.out:
            raise XlingError("--resume without a config needs the run directory: xling train RUN_DIR --resume")
        source = RunDir(args.out).read_config()  # the run's own config, as it recorded it
    else:
        source = args.config
    if args.config is None:  # the run's own record holds last_n resolved: with a new window it follows it
        window = overrides.get("eval.window", source.eval.window)  # (a quarter, as xling eval --window; unless given)
        if window != source.eval.window and "eval.last_n" not in overrides:
            overrides = {"eval.last_n": 0, **overrides}
    cfg = Config(source, overrides)
    out = Path(args.out or default_run_dir(source, cfg))
    flags = [*["--no-eval"] * args.no_eval, *["--quiet"] * args.quiet, *[f"--log {name}" for name in args.log or ()]]
    torchrun = " (under torchrun, as it started)" if world_from_env().active else ""
    args.resume_hint = (out, shlex.join(["xling", "train", str(out), "--resume"]) + "".join(" " + f for f in flags)
                        + torchrun)
    if args.resume and not world_from_env().rank:
        run_dir = RunDir(out)
        refuse_if_trained_elsewhere(out)  # before saying it resumes
        recorded = run_dir.read_info(tolerant=True)
        workdir = recorded.get("workdir")
        elsewhere = workdir and Path.cwd().resolve() != Path(workdir).resolve()
        if elsewhere and resolve_relative(unwrap(cfg), workdir) != unwrap(cfg):  # (eval and export find them anyway)
            raise XlingError(f"{out} reads paths relative to {workdir}, where it trained, that do not exist from here: "
                             f"resume from there (cd {shlex.quote(workdir)})")
        step = run_dir.newest_checkpoint_step()
        pick_device(unwrap(cfg).train.device)  # (a device not here is refused before a change is noted)
        if step or run_dir.info_path.is_file():  # checked before saying it resumes (training checks again)
            for change in run_dir.check_resumes_with(unwrap(cfg)):
                print(f"note: {change}, recorded in {run_dir.config_path}", file=sys.stderr)
        if recorded.get("status") == "completed":
            what = "nothing to do" if args.no_eval else "its test evaluation runs again"
            print(f"{out} has finished training (step {step}): {what}", flush=True)
        elif step:
            print(f"resuming {out} from its last checkpoint, step {step}", flush=True)
        else:
            print(f"{out} has no checkpoint yet: training starts at step 0" if out.is_dir() else
                  f"{out} does not exist yet: a new run starts there", flush=True)
    run = train_run(cfg, out, resume=args.resume, evaluate=not args.no_eval, progress=not args.quiet,
                    loggers=args.log or ())
    if world_from_env().rank:  # torchrun: rank 0 reports and evaluates
        return 0
    if run.info.get("status") != "completed":  # training's own record (a study's run without eval is "trained")
        return 1
    print(ppl_table(run.info["valid"], f"validation perplexity ({out}, trained in {run.info.get('precision', '?')})"))
    if not args.no_eval:
        print(_evaluation_table(run, run.eval_path("test")))
    return 0


# --------------------------------------------------------------------------- status


def status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="run directories, or directories of runs (a root: its runs and its studies' runs; default: "
                        "the runs root, $XLING_RUNS or ./runs)")


def status(args, overrides) -> int:
    from ..study.spec import runs_root
    from ..study.state import status_rows

    root = runs_root()
    if not args.run_dirs and not root.is_dir():
        raise XlingError(f"no runs at {root} (the runs root: $XLING_RUNS, else ./runs): give run directories")
    print(for_terminal(runs_status_table(status_rows(args.run_dirs or [str(root)])), lines=True))
    return 0


# --------------------------------------------------------------------------- eval and sample


def eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["test", "valid", "train"], help="the split to score (default test)")
    p.add_argument("--max-tokens", type=count(0, 10**12), default=None,
                   help="score only a prefix of each language's stream (0: all; default: the run's eval.max_tokens)")
    p.add_argument("--window", type=count(0, 65536), default=None,
                   help="evaluation window (default: the run's; 0: the model's length)")
    p.add_argument("--last-n", type=count(0, 65535), default=None,
                   help="targets scored at the end of each window (0: a quarter of the window; default: a quarter "
                        "of --window if given, else the run's)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _evaluation_table(run: Run, path: Path) -> str:
    report = read_json(path)
    step, steps = report.get("step"), run.info.get("steps")
    of = f" of {steps}, an earlier checkpoint" if step and steps and step < steps else ""
    title = (f"{report['split']} perplexity at step {step}{of} (window {report['window']}, last {report['last_n']} "
             f"scored) -> {path}")
    return ppl_table(report["languages"], title)


def evaluate(args, overrides) -> int:
    run = Run(args.run_dir)
    run.evaluate(args.split, args.max_tokens, args.device, window=args.window, last_n=args.last_n, progress=True)
    print(_evaluation_table(run, run.eval_path(args.split, window=args.window, last_n=args.last_n,
                                               max_tokens=args.max_tokens)))
    return 0


def sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--language", required=True, help="a language name of the run, e.g. EN2")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--tokens", type=count(1, 100_000), default=60, help="tokens to generate at most: it stops where the model ends the document (default 60)")
    p.add_argument("--temperature", type=number(0, 100), default=0.8, help="default 0.8; 0: greedy")
    p.add_argument("--top-k", type=count(0, 10**7), default=40, help="default 40; 0: no top-k cut")
    p.add_argument("--any-language", action="store_true",
                   help="let any of the model's ids follow, not only the language's; another language's pieces "
                        "are shown as [NAME: text]")
    p.add_argument("--seed", type=SEED, default=0, help=SEED_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def sample(args, overrides) -> int:
    run = Run(args.run_dir)
    text = run.sample(args.language, args.prompt, args.tokens, args.temperature, args.top_k, args.seed, args.device,
                      any_language=args.any_language)
    info = run.info
    spelled = info.get("languages") or []  # the label as the run spells it (--language matches in any case)
    name = next((n for n in spelled if n.lower() == args.language.lower()), args.language)
    print(f"[{name}] {text}")
    _note_untrained(info, name)
    return 0


def _note_untrained(info: dict, language: str) -> None:
    """A language the run (its run.json: `info`) gave no training tokens (EN2 in a ladder run) still has ids: say
    what they hold."""
    if (info.get("tokens") or {}).get(language) == 0:
        print(f"note: {language} got no training tokens in this run: its ids hold what training left of their "
              "random start", file=sys.stderr)


# --------------------------------------------------------------------------- export


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("out", help="a new directory for the export")
    p.add_argument("--format", default="hf", choices=["hf"],
                   help="hf: a transformers GPT2LMHeadModel checkpoint and its tokenizer (AutoTokenizer)")
    p.add_argument("--language", help="whose ids the tokenizer gives (default: the run's first language), e.g. EN2")


def export(args, overrides) -> int:
    run = Run(args.run_dir)
    result = run.export_hf(args.out, args.language)
    print(f"wrote {result['out']}: GPT2LMHeadModel (vocabulary {result['vocab_size']:,}) and the tokenizer of "
          f"{result['language']} ({', '.join(result['files'])})")
    note_earlier_checkpoint(run.info, result.get("step"))
    _note_untrained(run.info, result["language"])
    return 0


# --------------------------------------------------------------------------- bench


def bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file or packaged config name (default clone-90-10; overrides "
                   "apply on top)")
    p.add_argument("--steps", type=count(1, 100_000), default=20, help="timed steps per model (default 20)")
    p.add_argument("--warmup", type=count(0, 100_000), default=3, help="untimed steps first (default 3)")
    p.add_argument("--threads", type=count(0, 4096), default=0, help="torch threads (default 0: torch's choice, one "
                   "per core; more than the usable cores share them and are slower)")
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face comparison")
    p.add_argument("--out", help="also write the result as JSON here")


def bench(args, overrides) -> int:
    import torch

    from ..analysis.bench import run_bench
    from ..fsio import atomic_write_json

    if args.out:
        check_output_file(args.out)
    if args.threads:
        from ..study.launch import usable_cores

        cores = usable_cores()
        if args.threads > cores:
            print(f"note: {args.threads} threads on {cores} usable core{'' if cores == 1 else 's'}: they share the cores, "
                  "so every step is slower than it need be", file=sys.stderr)
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config or "clone-90-10", overrides)  # the README's default
    result = run_bench(cfg, steps=args.steps, warmup=args.warmup, hf=not args.no_hf,
                       log=lambda msg: print(msg, file=sys.stderr))
    print(bench_table(result))
    if args.out:
        atomic_write_json(Path(args.out), result)
        print(f"wrote {args.out}")
    return 0
