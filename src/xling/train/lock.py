"""A run directory's lock: held while a process trains the run, so no two processes (`xling train` twice,
a study runner and a hand resume, two study workers) train one run at once.

An flock on RUN_DIR/.lock: the kernel drops it when its process dies, so a killed process never leaves a
stale lock. The lock file names its holder's process id, for others' messages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..errors import XlingError
from ..fsio import make_dirs
from .rundir import RunDir

log = logging.getLogger(__name__)

# flock's errors on a file system without locks (Lustre without -o flock, some FUSE mounts)
NO_LOCKS = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL)
_HELD: set[str] = set()  # the run directories whose lock this process holds (a study runner's, while it trains)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """Hold the run's lock (yields True) or learn that another holder has it (yields False)."""
    make_dirs(run_dir)
    path = RunDir(run_dir).lock_path
    try:  # not through a link (a received run's .lock -> ~/.bashrc would be emptied and given a process id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise XlingError(f"{path} is a symbolic link (to {os.path.realpath(path)}): a run's lock is its own file, "
                         "written by whoever trains it; remove the link") from None
    if os.fstat(fd).st_nlink > 1:  # a hard link: the pid below would be written into another file
        os.close(fd)
        raise XlingError(f"{path} is a hard link to another file: a run's lock is its own file, written by whoever "
                         "trains it; remove it (a copy made with hard links, cp -al, shares it with the original)")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for other runners' messages
        key = os.path.realpath(run_dir)
        _HELD.add(key)
        try:
            yield True
        finally:
            _HELD.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(run_dir: Path) -> int | None:
    """The process id the run's lock file names (its holder, or its last holder)."""
    try:
        return int(RunDir(run_dir).lock_path.read_text().strip())
    except (OSError, ValueError):
        return None


def is_locked(run_dir: Path) -> bool:
    """Whether a process holds the run's lock (trains it)."""
    return lock_state(run_dir) is True


def lock_state(run_dir: Path) -> bool | None:
    """True while a process holds the run's lock, False when none does, None when it cannot tell (no lock file: not
    trained since xling took locks, or unreadable; a file system without flock). Only looks: a shared lock, tried and
    dropped, on the file opened read-only (a status read must not take the lock, nor need write access)."""
    if os.path.realpath(run_dir) in _HELD:  # this process's own: not probed (where flock is emulated by POSIX locks,
        return True  # as on NFS, a probe's unlock would release the holder's lock)
    try:  # not through a link, and not waiting on a FIFO (a received run's .lock may be either)
        fd = os.open(RunDir(run_dir).lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError as exc:
        if exc.errno not in NO_LOCKS:
            raise
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock while training it, or refuse at once: a second process on one run would interleave their
    steps in its files. Under a lock this process holds already (a study runner's, around its Trainer): nothing more."""
    if os.path.realpath(run_dir) in _HELD:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            got = stack.enter_context(run_lock(run_dir))
        except OSError as exc:  # a file system without flock (Lustre without -o flock, some FUSE mounts)
            if exc.errno not in NO_LOCKS:
                raise
            log.warning(f"file locks do not work under {run_dir} ({exc.strerror}): nothing keeps a second process "
                        "from training this run at the same time")
            got = True
        if not got:
            raise XlingError(_being_trained(run_dir))
        yield


def refuse_if_trained_elsewhere(run_dir: Path) -> None:
    """One line, before anything is announced or advised, when another process trains the run."""
    if os.path.realpath(run_dir) not in _HELD and is_locked(run_dir):
        raise XlingError(_being_trained(run_dir))


def _being_trained(run_dir: Path) -> str:
    return (f"{run_dir} is being trained by process {lock_holder(run_dir) or '?'} (its .lock): wait for it to finish, "
            "or train into another directory")
