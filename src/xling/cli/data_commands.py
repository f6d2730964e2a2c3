"""`xling prepare`: a run's tokenizers and token arrays, built ahead of training."""

from __future__ import annotations

import argparse

from ..config import load_config
from .command import count


def prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file or packaged config name")
    p.add_argument("--workers", type=count(1, 1024), default=None,
                   help="processes that read and encode the corpus (default: all cores); the result is the same for any")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def prepare(args, overrides) -> int:
    from ..data.mixture import Mixture
    from ..data.prepare import prepare as prepare_data

    cfg = load_config(args.config, overrides)
    Mixture.of(cfg)  # the translations exist, and languages.mix / transforms name languages of the run
    rows = prepare_data(cfg, workers=args.workers, progress=False if args.quiet else None)
    tokenizers = list(dict.fromkeys(str(r["tokenizer"]) for r in rows))
    for path in tokenizers:
        print(f"tokenizer {path}")
    print(f"  {'source':<8} {'split':<6} {'documents':>11} {'tokens':>15}  {'':<5} token array")
    for r in rows:
        state = "built" if r["built"] else "ready"
        print(f"  {r['source']:<8} {r['split']:<6} {r['documents']:>11,} {r['tokens']:>15,}  {state:<5} {r['path']}")
    if rows:
        print(f"prepared in {rows[-1]['seconds']:.1f} s")
    return 0
