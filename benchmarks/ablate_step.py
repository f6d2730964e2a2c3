"""Upper bounds of fusing small ops: a training step as is, with its tanh-GELU made free, and with its LayerNorms made free.

    python benchmarks/ablate_step.py [CONFIG] [--section.key VALUE ...] [--steps 30]

A fused kernel can at best make an op cost nothing: the step with that op replaced by the identity (wrong numbers,
the same shapes and every other op) times what fusing it could ever save. Builds the run's Trainer as `xling train`
would and times the three variants round by round (one step of each per round, medians), as `xling bench` times
its contenders. Issue 17 (README, "Fusing the small ops"): is a hand-written fused kernel worth writing?
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys

import torch
import torch.nn.functional as F

from xling.analysis.bench import timed_in_rounds, timing_trainer
from xling.cli.app import config_and_options
from xling.cli.command import count


@contextlib.contextmanager
def free(op: str):
    """The op ("gelu", "layernorm") replaced by the identity while the block runs; "" leaves the step as is."""
    target, name = {"gelu": (F, "gelu"), "layernorm": (torch.nn.LayerNorm, "forward"), "": (None, "")}[op]
    if target is None:
        yield
        return
    original = getattr(target, name)
    setattr(target, name, lambda *args, **kwargs: args[1] if target is torch.nn.LayerNorm else args[0])
    try:
        yield
    finally:
        setattr(target, name, original)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=count(1), default=30, help="timed rounds (one step of each variant per round; default %(default)s)")
    args, cfg = config_and_options(p, argv)
    trainer = timing_trainer(cfg, args.steps + 3)

    def step_with(op: str):
        def step(i: int) -> torch.Tensor:
            with free(op):
                return trainer.train_step(i)
        return step

    variants = {"as is": "", "tanh-GELU free": "gelu", "LayerNorms free": "layernorm"}
    times = timed_in_rounds({label: step_with(op) for label, op in variants.items()}, args.steps, 3, trainer.device)
    print(f"{cfg.model.preset}, batch {cfg.train.batch_size} x {cfg.model.seq_len}, {trainer.precision}, "
          f"{torch.get_num_threads()} threads, {trainer.device}, torch {torch.__version__}")
    base = statistics.median(times["as is"])
    for label in variants:
        median = statistics.median(times[label])
        print(f"  {label:16} {1000 * median:6.1f} ms  (saves {1000 * (base - median):4.1f} ms, "
              f"{100 * (base - median) / base:4.1f} % of the step; medians of {args.steps})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
