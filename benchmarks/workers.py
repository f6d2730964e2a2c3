"""Workers x threads on this machine: which layout of a study's runs trains the most tokens a second.

    python benchmarks/workers.py [CONFIG] [--section.key VALUE ...] [--layouts 1x16,16x1] [--steps 20] [--out F]

For each layout W x T (W runs at once with T threads each; default: every even split of the usable
cores, 1 x cores to cores x 1), W spawned processes each build the config's Trainer the way a
study worker does (`xling.study.workers.init_worker`: OMP_NUM_THREADS=T before torch starts), train
a few warm-up steps, wait for each other, then time STEPS training steps. A layout's rate is the sum
of its runs' tokens/s (each from its median step). The study runner's default (`launch.auto_workers`)
is one run per usable core, one thread each; this script is how that rule was checked (README,
Performance, "Workers and threads").
"""

# No torch at the top: spawned workers import this module, and their OpenMP settings must be in
# their environment before torch starts (xling.study.workers).
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _time_steps(config: dict, threads: int, warmup: int, steps: int, barrier, results) -> None:
    """One worker: its Trainer, warm-up steps, then (after every worker is ready) the timed steps."""
    from xling.study.workers import init_worker

    init_worker(threads)
    from xling.config import from_dict
    from xling.train.trainer import Trainer

    cfg = from_dict(config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run")
        trainer.prepare(resume=False)
        for step in range(warmup):
            trainer.train_step(step).item()
        barrier.wait()
        times = []
        for step in range(warmup, warmup + steps):
            start = time.perf_counter()
            trainer.train_step(step).item()  # .item(): the step has finished
            times.append(time.perf_counter() - start)
    results.put(statistics.median(times))


def measure(config: dict, workers: int, threads: int, warmup: int, steps: int) -> list[float]:
    """Median step seconds of each of `workers` runs trained at once with `threads` threads each.
    A worker that dies (an error, out of memory) stops the measurement at once, and the others with it."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_time_steps, args=(config, threads, warmup, steps, barrier, results))
             for _ in range(workers)]
    for p in procs:
        p.start()
    medians = []
    try:
        while len(medians) < workers:
            try:
                medians.append(results.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a worker failed (exit code {dead[0]}; any error it printed is above)") from None
    finally:
        for p in procs:
            if p.is_alive() and len(medians) < workers:
                p.kill()
            p.join()
    return sorted(medians)


def default_layouts(cores: int) -> list[tuple[int, int]]:
    """Every way to share the cores out evenly: 1 x cores, ..., cores x 1 (the runner's default)."""
    return [(w, cores // w) for w in range(1, cores + 1) if cores % w == 0]


def main(argv: list[str]) -> int:
    from xling.analysis.bench import cpu_model
    from xling.cli.app import split_overrides
    from xling.cli.command import count
    from xling.study.launch import usable_cores
    from xling.train.threads import openmp_wait_setup

    openmp_wait_setup()  # as `xling study run` does: the workers inherit it
    rest, overrides = split_overrides(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", help="YAML config or packaged config name (default: clone-90-10)")
    p.add_argument("--layouts", help="comma-separated WxT, e.g. 1x16,4x4,16x1 (default: every even split of the cores)")
    p.add_argument("--steps", type=count(1), default=20, help="timed steps per run (default 20)")
    p.add_argument("--warmup", type=count(0), default=3, help="untimed steps first (default 3)")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(rest)
    try:
        layouts = ([tuple(int(n) for n in item.lower().split("x")) for item in args.layouts.split(",")]
                   if args.layouts is not None else default_layouts(usable_cores()))
    except ValueError:
        layouts = []
    if not layouts or not all(len(layout) == 2 and min(layout) >= 1 for layout in layouts):
        p.error(f"--layouts: expected e.g. 1x16,16x1, got {args.layouts!r}")

    from xling.config import load_config, to_dict
    from xling.errors import XlingError
    from xling.train.trainer import Trainer

    try:
        cfg = load_config(args.config or "clone-90-10", overrides)
        cfg.train.steps, cfg.train.device = args.warmup + args.steps, "cpu"
        with tempfile.TemporaryDirectory() as tmp:  # builds the data caches once, before the workers race for them
            trainer = Trainer(cfg, Path(tmp) / "run")
            trainer.prepare(resume=False)
    except XlingError as exc:
        print(f"workers.py: error: {exc}", file=sys.stderr)
        return 2
    tokens = cfg.train.batch_size * cfg.model.seq_len
    wait = {k: v for k, v in os.environ.items() if k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    shape = {"preset": cfg.model.preset, "batch": cfg.train.batch_size, "seq_len": cfg.model.seq_len,
             "precision": trainer.precision, "steps": args.steps, "warmup": args.warmup}
    print(f"{cfg.model.preset}, batch {cfg.train.batch_size} x {cfg.model.seq_len}, {trainer.precision}; "
          f"{usable_cores()} usable of {os.cpu_count()} logical CPUs ({cpu_model()}), OpenMP wait {wait}")
    rows, failed = [], ""
    for workers, threads in layouts:
        if workers * threads > usable_cores():
            print(f"  ({workers} x {threads}: more threads than the {usable_cores()} usable cores)")
        try:
            medians = measure(to_dict(cfg), workers, threads, args.warmup, args.steps)
        except RuntimeError as exc:  # e.g. out of memory at many runs: the other layouts are still measured
            failed = f"{failed}; " * bool(failed) + f"{workers} x {threads}: {exc}"
            print(f"  {workers} x {threads}: {exc}", file=sys.stderr)
            continue
        rate = sum(tokens / m for m in medians)
        rows.append({"workers": workers, "threads": threads, "step_ms": [m * 1e3 for m in medians],
                     "tokens_per_s": rate})
        print(f"  {workers:>3} x {threads:<3} step {min(medians) * 1e3:8.1f} - {max(medians) * 1e3:8.1f} ms"
              f"   {rate:12,.0f} tokens/s", flush=True)
    best = max((r["tokens_per_s"] for r in rows), default=math.nan)
    for r in rows:
        r["relative"] = r["tokens_per_s"] / best
    if rows:
        print("relative to the best: " + ", ".join(f"{r['workers']}x{r['threads']} {r['relative']:.2f}" for r in rows))
    if args.out:
        Path(args.out).write_text(json.dumps({**shape, "cores": usable_cores(), "cpu": cpu_model(), "openmp_wait": wait,
                                              "layouts": rows, **({"failed": failed} if failed else {})}, indent=1),
                                  encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
