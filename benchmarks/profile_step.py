"""Where a training step's time goes (torch.profiler), and an A/B of the loss's softmax, eager or compiled.

    python benchmarks/profile_step.py [CONFIG] [--section.key VALUE ...] [--steps 10] [--rows 25]

Builds the run's Trainer as `xling train` would (the config's data, model, precision, compile), then:
1. on a GPU, times rounds of `Trainer.train_step` with the loss softmax eager and compiled (`GPT.fused_softmax`,
   what `train.compile` turns on there), alternating one step of each per round (medians); on a CPU the step
   as is (Inductor's CPU code for that softmax, which writes its input in place, corrupts the heap on two or more
   threads with torch 2.13, and training never compiles it there);
2. profiles a few steps of the eager variant and prints the ops that took the most device time
   (CPU time on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from xling.analysis.bench import synchronize, timed_in_rounds, timing_trainer
from xling.cli.app import config_and_options
from xling.cli.command import count


def _step_with(trainer, fused: bool):
    def step(i: int) -> torch.Tensor:
        trainer.model.fused_softmax = fused
        return trainer.train_step(i)

    return step


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=count(1), default=10, help="timed rounds (one step of each variant per round; default %(default)s)")
    p.add_argument("--rows", type=count(1), default=25, help="profiler rows to print (default %(default)s)")
    args, cfg = config_and_options(p, argv)
    if args.steps < 10:
        print(f"note: {args.steps} rounds; the A/B below is noise under about 10", file=sys.stderr)
    trainer = timing_trainer(cfg, args.steps + 3)
    device = trainer.device
    print(f"{cfg.model.preset}, batch {cfg.train.batch_size} x {cfg.model.seq_len}, {trainer.precision}, "
          f"compile {cfg.train.compile}, {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch {torch.__version__}")
    # one step of each per round, as `xling bench` times its contenders (the compiled one compiles in warm-up)
    variants = {"eager": _step_with(trainer, False)}
    if device.type == "cuda":
        variants["compiled"] = _step_with(trainer, True)
    times = {v: 1000 * statistics.median(t) for v, t in timed_in_rounds(variants, args.steps, 3, device).items()}
    if "compiled" in times:
        print(f"step: eager softmax {times['eager']:.1f} ms, compiled softmax {times['compiled']:.1f} ms (medians of "
              f"{args.steps}); eager / compiled = {times['eager'] / times['compiled']:.3f}")
    else:
        print(f"step: {times['eager']:.1f} ms (median of {args.steps}; the compiled loss softmax is timed on a GPU only: "
              f"Inductor's CPU code for it corrupts the heap on two or more threads with torch 2.13)")
    trainer.model.fused_softmax = False
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for step in range(3):
            trainer.train_step(step).item()
    synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
