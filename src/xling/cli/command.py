"""What a CLI command is: a name, its help, how it adds its arguments and what it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]  # adds the command's arguments to its parser
    run: Callable[[argparse.Namespace, dict], int]  # (parsed arguments, config overrides) -> exit status
    description: str = ""  # the longer text of `xling NAME --help` (default: `help`)
    overrides: bool = False  # accepts config overrides (--section.key VALUE)
    epilog: Callable[[], str] | None = None  # text after the arguments in `--help`
    # (parsed arguments) -> whether, run again after a Ctrl-C, it goes on from where it stopped (else it starts afresh)
    continues: Callable[[argparse.Namespace], bool] = lambda args: False


ROOT_HELP = "directory of run directories (default: $XLING_RUNS or ./runs)"
DEVICE_HELP = "auto (default: a GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"
SEED_HELP = "random seed (default 0)"
DB_HELP = "SQLite results store (default: ROOT/xling.db)"


def always(args: argparse.Namespace) -> bool:
    """A Command's `continues` where running the command again always goes on from where it stopped."""
    return True


LOGGERS = ("tensorboard", "wandb", "csv")  # --log choices (train.live_log.LOGGERS, which imports torch)
LOG_HELP = ("log training as it goes (repeatable): tensorboard (RUN_DIR/tensorboard/), wandb (an offline run in "
            "RUN_DIR/wandb/; WANDB_MODE=online to sync) or csv (RUN_DIR/metrics.csv)")


def count(lo: int, hi: int = 10**9):
    """An argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def WORKERS(text: str) -> int | str:
    """An argparse type: how many runs at a time, 1 to 1024, or auto (the default: by cores and memory)."""
    return "auto" if text.strip().lower() == "auto" else count(1, 1024)(text)


def number(lo: float, hi: float, *, above: bool = False):
    """An argparse type: a finite number in [lo, hi] ((lo, hi] with above=True)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ((lo < value if above else lo <= value) and value <= hi):  # nan fails every comparison
            raise argparse.ArgumentTypeError(f"must be in {'(' if above else '['}{lo:g}, {hi:g}], got {text}")
        return value

    return parse


SEED = count(0, 2**32 - 1)


def note_earlier_checkpoint(info: dict, step: int | None) -> None:
    """Where a command used the weights of a checkpoint before the run's last step (`info`: its run.json), say so."""
    steps = info.get("steps")
    if step and steps and step < steps:
        why = ("its newest checkpoint is missing or did not verify" if info.get("status") == "completed"
               else "training has not finished")
        print(f"note: the weights of step {step} of {steps}: {why}", file=sys.stderr)
