"""The training step with the loss's chunk rule as it is, and with each other rule, alternated step by step.

    python benchmarks/loss_chunks.py [CONFIG] [--section.key VALUE ...] [--steps 15]

Builds the run's Trainer as `xling train` would, then times `Trainer.train_step` under three chunk rules of
`xling.model.loss`, one step of each per round (medians; other load hits all three alike):
- as is: 4 MB chunks of fp32 logits for a small head on a CPU, else 2^23 logits and at least 512 rows;
- large chunks for every head (the rule before 2026-11-29);
- small chunks for every head and dtype (2^20 logits, no minimum of rows).
The rules round the head's gradient differently, so the runs drift apart by rounding; the times do not depend on it.
Under ~15 rounds the medians are noise on a shared machine ("as is" and "small chunks" are the same rule for a small
fp32 head: how far apart they come out shows the noise).
E.g. the demo's shapes on one thread: OMP_NUM_THREADS=1 python benchmarks/loss_chunks.py
--model.preset cpu-xs --tokenizer.vocab_size 2048 --train.batch_size 16
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from xling.analysis.bench import DTYPES, timed_in_rounds, timing_trainer
from xling.cli.app import config_and_options
from xling.cli.command import count
from xling.model import loss
from xling.train.trainer import Trainer

RULES = {  # (CE_SMALL_HEAD, CE_CHUNK_ELEMENTS, CE_MIN_ROWS)
    "as is": (loss.CE_SMALL_HEAD, loss.CE_CHUNK_ELEMENTS, loss.CE_MIN_ROWS),
    "large chunks": (0, loss.CE_CHUNK_ELEMENTS, loss.CE_MIN_ROWS),
    "small chunks": (0, loss.CE_CHUNK_ELEMENTS_SMALL_HEAD, 1),
}


def _step_under(trainer: Trainer, rule: tuple[int, int, int]):
    def step(i: int) -> torch.Tensor:
        loss.CE_SMALL_HEAD, loss.CE_CHUNK_ELEMENTS, loss.CE_MIN_ROWS = rule
        return trainer.train_step(i)

    return step


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=count(1), default=15, help="timed rounds (one step of each rule per round; default %(default)s)")
    args, cfg = config_and_options(p, argv)
    trainer = timing_trainer(cfg, len(RULES) * (args.steps + 2))
    head = trainer.model.head.weight
    head_in_matmul_dtype = head.detach().to(DTYPES[trainer.precision])  # (what the loss chunks)
    rows = cfg.train.batch_size * cfg.model.seq_len // cfg.train.grad_accum  # (a micro-batch)
    print(f"{cfg.model.preset}, batch {cfg.train.batch_size} x {cfg.model.seq_len}, head {tuple(head.shape)}, "
          f"{trainer.precision}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    times = timed_in_rounds({name: _step_under(trainer, rule) for name, rule in RULES.items()},
                            args.steps, 2, trainer.device)
    base = statistics.median(times["as is"])
    for name, rule in RULES.items():
        loss.CE_SMALL_HEAD, loss.CE_CHUNK_ELEMENTS, loss.CE_MIN_ROWS = rule
        chunk = loss._training_chunks(rows, head_in_matmul_dtype)[0][1]
        ms = 1000 * statistics.median(times[name])
        print(f"  {name:13s} {chunk:>5} rows a chunk  {ms:7.1f} ms a step  time ÷ as is's {ms / (1000 * base):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
