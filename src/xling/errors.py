"""What the user is told: XlingError (one line, exit 2) and warnings (one line each, on stderr)."""

from __future__ import annotations

import logging
import select
import sys


class XlingError(Exception):
    """A problem with the user's input (config, corpus, run directory) that they can fix.

    The message must say what is wrong *and* what to do about it, in one line.
    """


def first_line(exc: BaseException) -> str:
    """An exception's message in one line (its first), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def a_kind(value) -> str:
    """What a value is, for a message: 'an int', 'a list', 'None'."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def briefly(value, width: int = 40) -> str:
    """A value's repr for a message, cut to `width` characters (a received file's value may be of any length)."""
    shown = repr(value)
    return shown if len(shown) <= width else shown[:width - 3] + "..."


def for_terminal(text: str, lines: bool = False) -> str:
    """Text that may come from files a user received (a run's status, a folder's or a config's name), safe to print:
    control characters (escape sequences that clear or recolour a terminal, carriage returns, and newlines unless
    `lines`) shown as escapes, so a message stays the one line it says it is."""
    return "".join(c if c.isprintable() or (lines and c == "\n") else repr(c)[1:-1] for c in text)


def is_closed(stream) -> bool:
    """Whether `stream` is a pipe whose reader has gone (poll says so whatever Python's buffer holds)."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
    except (AttributeError, OSError, ValueError):  # not a real file (a test's captured output)
        return False
    return any(events & select.POLLERR for _, events in poller.poll(0))


def output_gone() -> bool:
    """Whether the reader of this process's stdout or stderr has gone (`xling ... | head`)."""
    return is_closed(sys.stdout) or is_closed(sys.stderr)


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is when a record comes (it is replaced by tests and tools)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr)
        except BrokenPipeError:  # nobody reads stderr any more (`xling ... 2>&1 | head`): unseen, not a failure of
            pass  # the work that warns (a study's worker told to stop warns that it stops)


def warnings_to_stderr() -> None:
    """Show the library's warnings (damaged caches, checkpoints, stores: the `xling` logger) as
    'warning: ...' lines on stderr. The CLI and study workers call this; Python users may not."""
    logger = logging.getLogger("xling")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
