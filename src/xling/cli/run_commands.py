"""Commands on one run: config, train, eval, sample, bench.

Library modules are imported inside the commands: `xling --help` and `xling study list` then
start without loading PyTorch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from pathlib import Path

from ..config import RunConfig, dump_yaml, load_config
from ..errors import XlingError
from ..fsio import read_json
from .command import LOG_HELP, LOGGERS, SEED, count, number
from .tables import bench_table, ppl_table


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
    from ..data.corpora import language_names
    from ..recipes import packaged

    if args.list:
        for name, path in packaged("configs").items():
            print(f"{name:<18} {path}")
        return 0
    cfg = load_config(args.config, overrides)
    language_names(cfg)  # the translations exist (as `train` would check)
    print(dump_yaml(cfg), end="")
    return 0


# --------------------------------------------------------------------------- train


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file or packaged config name (or a run directory with --resume)")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--log", action="append", choices=LOGGERS, help=LOG_HELP)


def train(args, overrides) -> int:
    from ..train.live_log import LiveLog
    from ..train.rundir import RunDir
    from ..train.trainer import Trainer

    if args.config is None and not args.resume:
        raise XlingError("give a config file (xling train CONFIG.yaml) or --resume RUN_DIR")
    if args.config and Path(args.config).is_dir():  # `xling train RUN_DIR --resume`
        args.out, args.config = args.config, None
    elif args.config and args.resume and not args.out:
        raise XlingError(f"{args.config} is not a run directory: resume with xling train RUN_DIR --resume")
    if args.config is None:
        if not args.out:
            raise XlingError("--resume without a config needs the run directory: xling train RUN_DIR --resume")
        cfg_path = RunDir(args.out).require().config_path
    else:
        cfg_path = args.config
    cfg = load_config(cfg_path, overrides)
    out = Path(args.out or Path("runs") / (cfg.name or Path(cfg_path).stem))
    with LiveLog(out, tuple(args.log or ())) as live:
        for note in live.notes:
            print(f"note: {note}", file=sys.stderr)
        info = Trainer(cfg, out, live=live).fit(resume=args.resume, progress=not args.quiet)
        if info["status"] != "completed":
            return 1
        if info.get("rank"):  # torchrun: rank 0 reports and evaluates
            return 0
        print(ppl_table(info["valid"], f"validation perplexity ({out})"))
        if not args.no_eval:
            evaluate(argparse.Namespace(run_dir=str(out), split="test", max_tokens=None, device="auto"), {})
            live.log_evaluation(read_json(RunDir(out).eval_path()))
    return 0


# --------------------------------------------------------------------------- eval and sample


def eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["test", "valid", "train"])
    p.add_argument("--max-tokens", type=count(0, 10**12), default=None, help="score only a prefix of each language's stream")
    p.add_argument("--device", default="auto")


def evaluate(args, overrides) -> int:
    from ..train.evaluate import evaluate_run

    report, path = evaluate_run(args.run_dir, args.split, args.max_tokens, args.device)
    title = f"{args.split} perplexity (window {report['window']}, last {report['last_n']} scored) -> {path}"
    print(ppl_table(report["languages"], title))
    return 0


def sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--language", required=True, help="a language name of the run, e.g. EN2")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--tokens", type=count(1, 100_000), default=60, help="tokens to generate")
    p.add_argument("--temperature", type=number(0, 100), default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=count(0, 10**7), default=40, help="0: no top-k cut")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="auto")


def sample(args, overrides) -> int:
    import torch

    from ..data.stream import decode_ids, encode_text
    from ..data.tokenizer import EOD_ID
    from ..model.gpt import generate
    from ..train.session import load_session

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
    # decoded with the prompt: a continuation's first piece may start a new word ("▁has")
    print(f"[{args.language}] {decode_ids(session.setup, lang, torch.cat([prompt.cpu(), out.cpu()]))}")
    return 0


# --------------------------------------------------------------------------- bench


def bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file or packaged config name (optional; overrides apply on top)")
    p.add_argument("--steps", type=count(1, 100_000), default=20, help="timed steps per model (default 20)")
    p.add_argument("--warmup", type=count(0, 100_000), default=3, help="untimed steps first (default 3)")
    p.add_argument("--threads", type=count(0, 4096), default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face comparison")
    p.add_argument("--out", help="also write the result as JSON here")


def bench(args, overrides) -> int:
    import torch

    from ..analysis.bench import run_bench
    from ..fsio import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides)
    result = run_bench(cfg, steps=args.steps, warmup=args.warmup, hf=not args.no_hf,
                       log=lambda msg: print(msg, file=sys.stderr))
    print(bench_table(result))
    if args.out:
        atomic_write_json(Path(args.out), result)
        print(f"wrote {args.out}")
    return 0
