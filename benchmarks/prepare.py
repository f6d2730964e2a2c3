"""Data preparation at paper scale: throughput and peak memory of tokenizer + token arrays.

Generates a corpus of local text (default 1 GB, and one 4x smaller) from the built-in Bibles:
documents of 20-80 consecutive verses of a random translation (all nine: English, French,
Spanish, German, Italian, Russian, Polish) at a random place, one document per line, in .txt
files of 64 MB, seeded. The Bibles hold about 40 MB of verses, so every verse appears about 25
times per GB, each time in another document. Nothing is downloaded.

Each measurement runs in a fresh process with an empty cache: train the tokenizer (vocabulary
16,384 as in the `-paper` studies) and build the train / valid / test token arrays, as `xling
prepare` and training do. Reported: wall time, MB/s of corpus text, and the peak of the summed RSS
of the process and all its worker processes (sampled every 50 ms).

    python benchmarks/prepare.py                          # 256 MB and 1 GB, 1 and 2 workers
    python benchmarks/prepare.py --sizes 64 --workers 1 2 --baseline ../xling-old/src
    python benchmarks/prepare.py --keep bench-corpus --out prepare.json

--baseline runs the same preparation with another xling source tree (e.g. the release before
streaming preparation: `git worktree add ../xling-old <commit>`), for the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from xling.data.bible import TRANSLATIONS, bible_verses

FILE_BYTES = 64 << 20

MEASURE = r"""
import json, sys
from xling.config import CorpusConfig
corpus = CorpusConfig(name="text", paths=[sys.argv[1]], doc_per_line=True)
vocab, workers = int(sys.argv[2]), int(sys.argv[3])
try:  # what `xling prepare` does
    from xling.config import RunConfig, TokenizerConfig
    from xling.data.prepare import prepare
except ImportError:  # xling <= 0.2: the tokenizer, then each split's array, as training did
    from xling.data.token_arrays import token_array
    from xling.data.tokenizer import get_tokenizer
    tokenizer = get_tokenizer([corpus], vocab)
    tokens = sum(len(token_array(corpus, split, tokenizer)) for split in ("train", "valid", "test"))
    sha = tokenizer.sha256
else:
    rows = prepare(RunConfig(corpus=corpus, tokenizer=TokenizerConfig(vocab_size=vocab)), workers=workers,
                   progress=False)
    tokens = sum(r["tokens"] for r in rows)
    sha = rows[0]["tokenizer_sha256"]
print(json.dumps({"tokens": tokens, "tokenizer_sha256": sha}))
"""


def make_corpus(root: Path, size_mb: int, seed: int = 0) -> int:
    """Write about size_mb MB of documents (one per line) under root; the bytes written."""
    verses = [[v[3] for v in bible_verses(name)] for name in TRANSLATIONS]
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    target, written, part = size_mb * 10**6, 0, 0
    while written < target:
        lines, size = [], 0
        while size < min(FILE_BYTES, target - written):
            book = verses[rng.randrange(len(verses))]
            start = rng.randrange(len(book) - 80)
            line = " ".join(book[start:start + rng.randint(20, 80)]) + "\n"
            lines.append(line)
            size += len(line.encode("utf-8"))
        (root / f"part-{part:04d}.txt").write_text("".join(lines), encoding="utf-8")
        written, part = written + size, part + 1
    return written


def _tree_rss(root_pid: int) -> int:
    """Summed resident memory (bytes) of a process and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    parents[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(corpus: Path, vocab: int, workers: int, src: str | None, cache: Path) -> dict:
    env = dict(os.environ, XLING_CACHE=str(cache), OMP_NUM_THREADS="1")
    if src:
        env["PYTHONPATH"] = src
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MEASURE, str(corpus), str(vocab), str(workers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"preparation failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "seconds": seconds, "peak_rss_mb": peak[0] / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="corpus sizes in MB (default 256 1024)")
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="worker counts (default 1 2; none: only --baseline)")
    p.add_argument("--vocab", type=int, default=16384)
    p.add_argument("--baseline", help="another xling source tree (its src/) to time the same way, 1 worker setting")
    p.add_argument("--baseline-sizes", type=int, nargs="+", help="sizes for --baseline (default: the smallest)")
    p.add_argument("--keep", help="write (or reuse) the corpora here instead of a temporary directory")
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args()
    # a wrong --baseline would silently time this code again (the installed xling answers the import)
    if args.baseline and not (Path(args.baseline) / "xling" / "__init__.py").is_file():
        p.error(f"--baseline {args.baseline} holds no xling package: give a source tree's src/ directory")
    if min(args.sizes) < 1 or any(w < 1 for w in args.workers):
        p.error("--sizes (MB) and --workers must be at least 1")
    if not args.workers and not args.baseline:
        p.error("--workers without counts times only --baseline: give worker counts, or --baseline SRC")
    if not 300 <= args.vocab <= 65536:  # (SentencePiece's own check, after the corpus is written, is a traceback)
        p.error(f"--vocab {args.vocab}: give 300 to 65536 pieces, as tokenizer.vocab_size takes")
    if args.keep and Path(args.keep).exists() and not Path(args.keep).is_dir():
        p.error(f"--keep {args.keep} is a file: give a directory")

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="xling-prepare-bench-"))
    runs = []
    try:
        for size in args.sizes:
            corpus = base / f"corpus-{size}mb"
            if not corpus.is_dir():
                t = time.perf_counter()
                nbytes = make_corpus(corpus, size)
                print(f"generated {nbytes / 1e6:,.0f} MB in {time.perf_counter() - t:.0f} s: {corpus}", file=sys.stderr)
            nbytes = sum(f.stat().st_size for f in corpus.glob("*.txt"))
            plans = [("streaming", None, w) for w in args.workers]
            if args.baseline and size in (args.baseline_sizes or [min(args.sizes)]):
                plans.append(("baseline", args.baseline, 0))
            for code, src, workers in plans:
                cache = Path(tempfile.mkdtemp(prefix="xling-prepare-cache-"))
                try:
                    r = measure(corpus, args.vocab, workers, src, cache)
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
                r.update(code=code, size_mb=nbytes / 1e6, workers=workers, mb_per_s=nbytes / 1e6 / r["seconds"])
                runs.append(r)
                print(f"{code:<9} {r['size_mb']:>7,.0f} MB  workers {workers or '-':>2}  {r['seconds']:>7.1f} s  "
                      f"{r['mb_per_s']:>6.2f} MB/s  peak RSS {r['peak_rss_mb']:>6,.0f} MB  {r['tokens']:,} tokens  "
                      f"tokenizer {r['tokenizer_sha256'][:12]}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "loadavg": load}, indent=2) + "\n")


if __name__ == "__main__":
    main()
