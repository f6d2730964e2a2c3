"""Ordered, bounded parallel map over a stream of chunks, and the progress bar of data preparation.

`Workers.map` pulls items lazily and keeps at most `in_flight` of them in worker processes
(`multiprocessing.Pool.imap` would read its whole input ahead), and yields results in input
order, so what is built from them is the same for any number of workers. Workers are started
with "spawn": they do not inherit the parent's memory (a training process, torch) and hold only
what a task needs.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tqdm import tqdm

from ..errors import XlingError

# Fewer chunks than this are processed in the calling process: starting workers (about a second
# with spawn) costs more than it saves.
MIN_CHUNKS_FOR_WORKERS = 4

def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def spawn_context():
    """multiprocessing's "spawn" context, for worker processes that hold only what their tasks need."""
    check_not_importing_the_script()
    return multiprocessing.get_context("spawn")


def check_not_importing_the_script() -> None:
    """A spawned worker first imports the script that started it. Where that script trains or runs a study at its top
    level (not under `if __name__ == "__main__":`), the worker would do so too, and multiprocessing stops it with a
    traceback in every worker; here it ends with one line that says what to change. (Exiting is all a worker can
    do while it imports: nothing else would see an error raised there.)"""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # (multiprocessing's own test of this)
        raise SystemExit("xling: error: this script starts worker processes at its top level, where each worker "
                         "imports it again: put its xling calls under `if __name__ == \"__main__\":`")


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool


class Workers:
    """Worker processes for data preparation: started when a map first has enough items, shared by
    every map run while open (`with Workers(n) as workers: ...`), stopped on close."""

    def __init__(self, count: int | None = None):
        self.count = count or default_workers()
        self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # a running task ends within its chunk
            self._pool = None

    def map(self, task: Callable, items: Iterable, state=None, inline_state=None, in_flight: int | None = None,
            min_items: int = MIN_CHUNKS_FOR_WORKERS) -> Iterator[tuple[object, object]]:
        """(item, task(state, item)) for every item, in order. `task` must be a module-level function
        (workers import it) and `state` small (it goes with every item). Items are pulled one at a
        time as results come back, so a generator of items may depend on the results seen so far.

        With one worker, fewer than `min_items` items, or inside a daemonic process (which may not
        start processes), the tasks run here, with `inline_state` if given."""
        items = iter(items)
        head = list(itertools.islice(items, min_items))
        if self.count <= 1 or len(head) < min_items or multiprocessing.current_process().daemon:
            state = state if inline_state is None else inline_state
            for item in itertools.chain(head, items):
                yield item, task(state, item)
            return
        if self._pool is None:  # (a worker that dies, e.g. out of memory, breaks the pool: an error, not a hang)
            self._pool = ProcessPoolExecutor(self.count, spawn_context(), _init_worker)
        in_flight = in_flight or 2 * self.count
        pending: deque = deque()
        try:
            for item in itertools.chain(head, items):
                if len(pending) >= in_flight:
                    done, result = pending.popleft()
                    yield done, result.result()
                pending.append((item, self._pool.submit(task, state, item)))
            while pending:
                done, result = pending.popleft()
                yield done, result.result()
        except BrokenProcessPool:
            self._pool = None
            raise XlingError("a data preparation worker process died (out of memory? or, from Python, a script whose "
                             "top level is not under `if __name__ == \"__main__\":`): run again with fewer --workers"
                             ) from None
        except BaseException:
            self.close()
            raise


def workers_of(workers: int | Workers | None) -> Workers:
    """A Workers for a count (or default), or the given one."""
    return workers if isinstance(workers, Workers) else Workers(workers)


def ordered_map(task: Callable, items: Iterable, workers: int | Workers | None, state=None, inline_state=None,
                **options) -> Iterator[tuple[object, object]]:
    """Workers.map with the given workers, or with workers of its own (stopped when done)."""
    if isinstance(workers, Workers):
        yield from workers.map(task, items, state, inline_state, **options)
        return
    with Workers(workers) as own:
        yield from own.map(task, items, state, inline_state, **options)


class Progress:
    """A progress bar over input bytes (MB/s, ETA) that also counts documents and tokens.

    enabled=None shows it only on a terminal."""

    def __init__(self, description: str, total_bytes: int, enabled: bool | None = None):
        self.documents = self.tokens = 0
        self.bytes = 0
        self.start = time.perf_counter()
        disable = None if enabled is None else not enabled
        self.bar = tqdm(total=total_bytes or None, desc=description, unit="B", unit_scale=True, unit_divisor=1000,
                        disable=disable, leave=True, dynamic_ncols=True, mininterval=0.5)

    def update(self, nbytes: int, documents: int = 0, tokens: int = 0) -> None:
        self.bytes += nbytes
        self.documents += documents
        self.tokens += tokens
        if not self.bar.disable:
            self.bar.set_postfix_str(f"{self.documents:,} docs, {self.tokens:,} tokens", refresh=False)
            self.bar.update(nbytes)

    def close(self) -> float:
        """Close the bar; the seconds since it started."""
        self.bar.close()
        return time.perf_counter() - self.start

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
