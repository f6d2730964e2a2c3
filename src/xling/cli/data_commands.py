"""`xling prepare`: a run's tokenizers and token arrays, built ahead of training."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
    mix = Mixture.of(cfg)  # the translations exist, and languages.mix / transforms name languages of the run
    start = time.time()
    rows = prepare_data(cfg, workers=args.workers, progress=False if args.quiet else None)
    # a source is one language's text; clones share their base language's
    names = [mix.names[0] + (" and its clones" if len(mix.names) > 1 else "")] if mix.kind == "clone" else mix.names
    brought = {str(Path(p).expanduser()) for p in (cfg.tokenizer.path, cfg.tokenizer.second_path) if p}
    texts = {r["source"]: _listed([names[s] for s in r["sources"]]) for r in rows}  # a pair of one text: both
    users: dict[str, list[str]] = {}  # tokenizer -> the texts it encodes (one for a joint vocabulary)
    for r in rows:
        users.setdefault(str(r["tokenizer"]), []).extend(names[s] for s in r["sources"])
    for path, langs in users.items():
        state = "brought" if path in brought else "built" if Path(path).stat().st_mtime >= start else "ready"
        print(f"tokenizer of {_listed(list(dict.fromkeys(langs)))} ({state}) {path}")
    width = max([8, *(len(t) for t in texts.values())])
    print(f"  {'text of':<{width}} {'split':<6} {'documents':>11} {'tokens':>15}  {'':<5} token array")
    for r in rows:
        state = "built" if r["built"] else "ready"
        print(f"  {texts[r['source']]:<{width}} {r['split']:<6} {r['documents']:>11,} {r['tokens']:>15,}  {state:<5} "
              f"{r['path']}")
    if rows:
        print(f"prepared in {rows[-1]['seconds']:.1f} s")
    return 0


def _listed(items: list[str]) -> str:
    """'EN', 'EN and FR', 'EN, FR and ES'."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]]))
