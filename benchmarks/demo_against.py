"""`xling demo` with this checkout's code against another commit's, alternated: how much faster is it end to end?

    python benchmarks/demo_against.py [--commit af04a4b] [--pairs 3] [--out F]

Each pair runs the other commit's demo, then this checkout's, each from an empty runs root in a temporary
directory, with this Python and its packages (the other code from `git archive`: no worktree is left behind).
The data cache ($XLING_CACHE) is shared: run `xling demo` once before, or the first demo of each code includes
preparing its data. Alternating matters: a shared or virtual machine drifts by 10-25 % within minutes (README,
Performance), so only the two demos of a pair are compared. Prints each demo's wall time, the part of it its runs
took (its last "[k/n] RUN in ... (N s elapsed)" line; since 2026-11-29 that includes the bilingual runs' alignment,
done by the workers) and the rest (start, the alignment before then, report), each pair's speed-up (the other's
time / this code's) and their median, a warning where other processes kept the cores busy during a demo, and
whether this code's demos printed the same result lines (the demo is deterministic on one machine). af04a4b is the
code of the day issue 17 was filed: the README's "before" for the demo's target.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = "import sys; from xling.cli import main; sys.exit(main())"  # (the filing-day code has no xling.__main__)
ELAPSED = re.compile(r"^\[\d+/\d+\] .*\((\d+) s elapsed\)$", re.MULTILINE)
RESULTS = "Test perplexity per language"  # the demo's result lines start here


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def unpack(commit: str, into: Path) -> Path:
    """The tree of `commit` (older code finds its studies and configs beside its package), unpacked under `into`;
    returns its src directory."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def imported_from(src: Path) -> Path:
    """Where `xling` is imported from with `src` first on the path (an installed copy must not win)."""
    out = subprocess.run([sys.executable, "-c", "import xling; print(xling.__file__)"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(src)}, check=True).stdout
    return Path(out.strip()).resolve()


def run_demo(src: Path, root: Path) -> dict:
    """One `xling demo` of the package at `src`, from the empty runs root root/runs."""
    root.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(src), "XLING_RUNS": str(root / "runs")}
    start, busy, own = time.perf_counter(), _busy_cpu_seconds(), _children_cpu_seconds()
    done = subprocess.run([sys.executable, "-c", DEMO, "demo"], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    # what the machine's cores did besides this demo (its workers included): other jobs make a pair unfair
    busy = None if busy is None else _busy_cpu_seconds() - busy
    others = None if busy is None else round(max(0.0, busy - (_children_cpu_seconds() - own)) / seconds, 2)
    elapsed = ELAPSED.findall(done.stdout)
    runs = float(elapsed[-1]) if elapsed else None
    results = done.stdout[done.stdout.find(RESULTS):] if RESULTS in done.stdout else ""
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()  # (an error's line is on stderr)
    return {"seconds": seconds, "runs_seconds": runs, "status": done.returncode, "results": results,
            "last_line": said[-1] if said else "", "other_cores": others}


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all cores have been busy since boot (None without Linux's /proc/stat)."""
    from xling.train.threads import cpu_ticks

    try:
        return cpu_ticks()[0] / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    from xling.analysis.bench import cpu_model
    from xling.cli.command import count
    from xling.errors import XlingError
    from xling.fsio import atomic_write_json, check_output_file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commit", default="af04a4b", help="the code to compare with (default af04a4b, issue 17's day)")
    p.add_argument("--pairs", type=count(1), default=3, help="pairs of demos, alternated (default 3)")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{args.commit}^{{commit}}")
        head = _git("rev-parse", "HEAD") + ("+changes" if _git("status", "--porcelain", "src") else "")
    except (OSError, subprocess.CalledProcessError):
        p.error(f"--commit: {args.commit!r} is not a commit of {REPO} (a git checkout of xling with its history)")
    if args.out:
        try:
            check_output_file(args.out)  # before the demos, not after them
        except XlingError as exc:
            p.error(f"--out: {exc}")
    rows, failed = [], ""
    try:
        with tempfile.TemporaryDirectory(prefix="demo-against-") as tmp:
            srcs = {"other": unpack(commit, Path(tmp)), "this": REPO / "src"}
            for src in srcs.values():
                found = imported_from(src)
                if not found.is_relative_to(src.resolve()):
                    p.error(f"xling is imported from {found} even with {src} first on the path")
            names = {"other": commit[:7], "this": "this code"}
            print(f"xling demo: {commit[:7]} against this checkout ({head[:7]}{head[40:]}), {args.pairs} pair(s), "
                  f"{cpu_model()}, {os.cpu_count()} logical CPUs, {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
            for pair in range(1, args.pairs + 1):
                row = {}
                for name, src in srcs.items():
                    demo = row[name] = run_demo(src, Path(tmp) / f"{name}{pair}")
                    print(f"  pair {pair}, {names[name]}: {demo['seconds']:.1f} s", file=sys.stderr, flush=True)
                    if demo["status"]:
                        failed = (f"the demo of {names[name]} failed (exit status {demo['status']}): "
                                  f"{demo['last_line']}")
                        break
                if failed:
                    break
                rows.append(row)
    except KeyboardInterrupt:
        failed = "stopped (Ctrl-C)"
    if rows:
        _print_pairs(rows, commit[:7])
    if args.out and rows:  # (the finished pairs, also after a failure or Ctrl-C)
        atomic_write_json(Path(args.out), {"commit": commit, "this": head, "cpu": cpu_model(), "pairs": rows,
                                           "date": time.strftime("%Y-%m-%d %H:%M %Z")})
    if failed:
        print(f"demo_against.py: {failed}", file=sys.stderr)
        return 130 if failed.startswith("stopped") else 1
    return 0


def _print_pairs(rows: list[dict], other: str) -> None:
    names = {"other": other, "this": "this code"}
    speedups = [row["other"]["seconds"] / row["this"]["seconds"] for row in rows]
    print(f"{'pair':>4}  {other:>9}  {'this code':>9}  {'speed-up':>8}  runs / the rest, {other}  "
          "runs / the rest, this code")
    for i, (row, speedup) in enumerate(zip(rows, speedups), 1):
        parts = [f"{d['runs_seconds']} / {d['seconds'] - (d['runs_seconds'] or 0):.1f} s" for d in row.values()]
        print(f"{i:>4}  {row['other']['seconds']:>7.1f} s  {row['this']['seconds']:>7.1f} s  {speedup:>7.2f}x  "
              f"{parts[0]:>22}  {parts[1]:>22}")
        for name, demo in row.items():
            if (demo.get("other_cores") or 0) > 0.25:
                print(f"      warning: other processes kept {demo['other_cores']:.2f} cores busy during the "
                      f"{names[name]} demo of pair {i}: this pair compares the machine's load, not the code")
    same = ("one demo" if len(rows) == 1 else f"the same in all {len(rows)} demos"
            if len({row["this"]["results"] for row in rows}) == 1 else "DIFFERENT between its demos")
    print(f"median speed-up ({other}'s time / this code's) {statistics.median(speedups):.2f}x over {len(rows)} "
          f"pair(s) (range {min(speedups):.2f}-{max(speedups):.2f}x); this code's result lines: {same}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
