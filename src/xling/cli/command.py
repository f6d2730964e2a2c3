"""What a CLI command is: a name, its help, how it adds its arguments and what it runs."""

from __future__ import annotations

import argparse
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


ROOT_HELP = "directory of run directories (default: $XLING_RUNS or ./runs)"
DB_HELP = "SQLite results store (default: ROOT/xling.db)"
