"""The `xling` command line: one table of commands (main.COMMANDS) over the library."""

from .main import main

__all__ = ["main"]
