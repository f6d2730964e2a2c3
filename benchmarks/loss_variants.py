"""The training step with the loss as it is and with each earlier variant of it, alternated step by step.

    python benchmarks/loss_variants.py [CONFIG] [--section.key VALUE ...] [--steps 15]

Builds the run's Trainer as `xling train` would, then times `Trainer.train_step` under five variants of
`xling.model.loss`, one step of each per round (medians; other load hits all of them alike):
- as is: 4 MB chunks of fp32 logits for a small head on a CPU, else 2^23 logits and at least 512 rows; on a CPU
  each row's loss read off its target's probability;
- large chunks for every head (the chunk rule before 2026-11-29; the rest as is, so not that day's step);
- small chunks for every head and dtype (2^20 logits, no minimum of rows);
- the loss from the max logit (before 2026-11-29's night): max logit - log(largest probability) - target logit,
  two more passes over each slice of logits;
- the head's gradient summed as [vocab, width] (logits.T @ h added a chunk) also for a small fp32 head on a CPU
  (before 2026-11-29's night), not transposed.
The chunk rules (and, with another BLAS, the head gradient's layout) round the head's gradient differently, so runs
drift apart by rounding; the times do not depend on it (the loss formula changes the logged loss only, not the
gradient). Under ~15 rounds the medians are noise on a shared machine ("as is" and "small chunks" are the same chunk
rule for a small fp32 head: how far apart they come out shows the noise).
E.g. the demo's shapes on one thread: OMP_NUM_THREADS=1 python benchmarks/loss_variants.py
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


def _loss_from_the_max_logit(logits: torch.Tensor, targets: torch.Tensor, rows_h, weight) -> torch.Tensor:
    """`loss._softmax_grad` on a CPU before 2026-11-29's night (the same gradient; the loss within rounding)."""
    part = logits.float()
    top = part.amax(dim=1, keepdim=True)
    target_logit = part.gather(1, targets)
    probs = torch.softmax(part, dim=1, out=part)
    summed = (top - probs.amax(dim=1, keepdim=True).log() - target_logit).sum()
    probs.scatter_add_(1, targets, probs.new_full((1, 1), -1.0).expand(len(targets), 1))
    if probs is not logits:
        logits.copy_(probs)
    return summed


AS_IS = {name: getattr(loss, name) for name in ("_training_chunks", "_softmax_grad", "_sums_head_grad_transposed")}
VARIANTS = {  # the functions of `xling.model.loss` each replaces, the rest as is
    "as is": {},
    "large chunks": {"_training_chunks": lambda n_rows, weight: loss._chunks(n_rows, len(weight), weight.device)},
    "small chunks": {"_training_chunks": lambda n_rows, weight: loss._spans(n_rows, loss.CE_CHUNK_ELEMENTS_SMALL_HEAD,
                                                                            len(weight))},
    "max-logit loss": {"_softmax_grad": _loss_from_the_max_logit},
    "head grad [V,D]": {"_sums_head_grad_transposed": lambda weight: False},
}


def _set(variant: dict) -> None:
    for name, value in {**AS_IS, **variant}.items():
        setattr(loss, name, value)


def _step_under(trainer: Trainer, variant):
    def step(i: int) -> torch.Tensor:
        _set(variant)
        return trainer.train_step(i)

    return step


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=count(1), default=15, help="timed rounds (one step of each variant per round; default %(default)s)")
    args, cfg = config_and_options(p, argv)
    trainer = timing_trainer(cfg, len(VARIANTS) * (args.steps + 2))
    head = trainer.model.head.weight
    head_in_matmul_dtype = head.detach().to(DTYPES[trainer.precision])  # (what the loss chunks)
    rows = cfg.train.batch_size * cfg.model.seq_len // cfg.train.grad_accum  # (a micro-batch)
    print(f"{cfg.model.preset}, batch {cfg.train.batch_size} x {cfg.model.seq_len}, head {tuple(head.shape)}, "
          f"{trainer.precision}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    times = timed_in_rounds({name: _step_under(trainer, variant) for name, variant in VARIANTS.items()},
                            args.steps, 2, trainer.device)
    base = statistics.median(times["as is"])
    for name, variant in VARIANTS.items():
        _set(variant)
        chunk = loss._training_chunks(rows, head_in_matmul_dtype)[0][1]
        ms = 1000 * statistics.median(times[name])
        print(f"  {name:15s} {chunk:>5} rows a chunk  {ms:7.1f} ms a step  time ÷ as is's {ms / (1000 * base):.3f}")
    _set(VARIANTS["as is"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
