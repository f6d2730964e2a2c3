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
    """Before torch starts OpenMP: idle threads sleep instead of spinning (measured in `xling bench`)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
