"""Files that are never half-written, and where derived data is cached."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

from .errors import XlingError


def default_cache_dir() -> Path:
    """Where derived files (tokenizers, token arrays) live: $XLING_CACHE or ~/.cache/xling."""
    return Path(os.environ.get("XLING_CACHE") or Path.home() / ".cache" / "xling")


UMASK = os.umask(0o022)
os.umask(UMASK)  # read the process umask (the only way is to set it, then restore it)


def cannot_create(path: Path, exc: OSError) -> XlingError:
    """The one line for a place that holds no new files (under /proc, say: "not found" even with its
    parents made)."""
    verb = "replace" if Path(path).exists() else "create"
    why = "its directory takes no new files" if exc.errno == errno.ENOENT else exc.strerror
    in_cache = cache_hint(path)
    if in_cache:
        return XlingError(f"cannot {verb} {path} ({why}): {in_cache}")
    return XlingError(f"cannot {verb} {path} ({why}): choose an output path on a writable disk")


def cache_hint(path) -> str:
    """For a path in the cache, which the user never typed: the setting that chose it; else ""."""
    cache = default_cache_dir()
    return f"it is in the cache ({cache}); set XLING_CACHE to a writable directory" \
        if path and Path(path).is_relative_to(cache) else ""


def _owner() -> str:
    """This process, as a temp file's name records it (host-pid; the host without dots, for the pattern below)."""
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp")  # .NAME.HOST-PID.RANDOM.tmp


def temporary_beside(path: Path, directory: bool = False):
    """A new temp file (fd, name) or directory (its Path) in `path`'s directory, made if needed, for
    writing `path` and renaming it into place; `cannot_create` where the place holds no new files. A temp
    file's name says which process writes it, so what a killed one left can be found (remove_stale_temporaries)."""
    path = Path(path)
    make_dirs(path.parent)
    try:
        if directory:
            return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{_owner()}.", suffix=".tmp"))
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_owner()}.", suffix=".tmp")
    except FileNotFoundError as exc:
        raise cannot_create(path, exc) from None


def make_dirs(path: Path) -> Path:
    """mkdir -p `path`; one line instead of a traceback where that cannot be (for the CLI and the API alike)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileNotFoundError as exc:
        raise cannot_create(path, exc) from None
    except (FileExistsError, NotADirectoryError) as exc:  # a file, or a link to nothing, where a directory is needed
        in_the_way = next((p for p in (path, *path.parents) if os.path.lexists(p) and not p.is_dir()), None)
        if in_the_way is None:
            why = exc.strerror
        elif in_the_way.exists():
            why = f"{in_the_way} is a file, not a directory"
        else:  # (a scratch disk not mounted, say)
            why = f"{in_the_way} is a link to {os.readlink(in_the_way)}, which does not exist"
        raise XlingError(f"cannot write under {path}: {why}") from None
    return path


def check_output_file(path: str | os.PathLike, directory: bool = False, probe: bool = True) -> Path:
    """Refuse at once, before the work that leads to it, an output file (or with `directory`, an output
    directory) that could not be written: a directory (a file), a path through a file, or (`probe`) a
    place that takes no new files (read-only, no permission, /proc), found by making and removing a file."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise XlingError(f"{path} is a file: give the output a directory")
    if not directory and path.is_dir():
        raise XlingError(f"{path} is a directory: give the output a file name")
    above = path if directory and path.is_dir() else path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise XlingError(f"cannot write {path}: {above} is a file, not a directory")
    if probe:
        try:
            fd, name = tempfile.mkstemp(dir=above, prefix=".xling-probe.", suffix=".tmp")
        except OSError as exc:  # ENOENT under /proc, EACCES, EROFS
            raise cannot_create(path, exc) from None
        os.close(fd)
        os.unlink(name)
    return path


@contextlib.contextmanager
def atomic_write(path: Path):
    """Open a temp file next to `path` for binary writing; fsync and rename it into place on success.

    Readers therefore see either the old file or the complete new one, never a partial write,
    and a crash leaves at most a stray temp file that no reader looks for.
    """
    path = check_output_file(path, probe=False)  # the temp file below is the probe
    fd, tmp = temporary_beside(path)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def open_regular(path: Path):
    """A file opened for reading in binary, if it is a regular file (after links); a FIFO or a device (a received
    run's `run.json` made a FIFO, or a link to /dev/zero) is a ValueError, not a read that never ends."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # (a FIFO would block in open itself)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a regular file (a FIFO, a device or a folder)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_key(identity, length: int = 16) -> str:
    """A short, stable hex key for a JSON-serialisable identity (cache entries, run ids)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:length]


_REQUIRED = object()


def read_json(path: Path, default=_REQUIRED) -> dict:
    """A JSON object from a file. A file that is missing, not JSON or not an object returns `default`
    when one is given (callers that can redo the work pass {}), else raises one XlingError."""
    try:
        with open_regular(path) as f:
            content = json.loads(f.read().decode("utf-8"))
        if not isinstance(content, dict):
            raise ValueError(f"holds a JSON {type(content).__name__}, not an object")
        return content
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, RecursionError) as exc:
        # missing, or not a JSON object (UnicodeDecodeError and JSONDecodeError are ValueErrors; nested too deep);
        # other OSErrors (permissions, I/O) propagate: redoing work would not fix them
        if default is not _REQUIRED:
            return default
        raise XlingError(f"cannot read {path} ({exc.__class__.__name__}: {str(exc)[:80]}): the file is missing or "
                         "corrupt") from None


def remove_stale_temporaries(directory: Path, beside: str | None = None) -> int:
    """Remove the temp files under `directory` (or only the temp files and directories for writing its entry
    `beside`) that a process of this machine left when it was killed (it is no longer running, and the file has
    not changed for an hour; another machine's, on a shared disk, are left alone); returns how many."""
    removed, host, directory = 0, _owner().rsplit("-", 1)[0], Path(directory)
    found_paths = directory.glob(f".{glob.escape(beside)}.*.tmp") if beside else directory.rglob(".*.tmp")
    for path in found_paths if directory.is_dir() else ():
        found = _TEMPORARY.fullmatch(path.name)
        if not found or found["host"] != host or not (path.is_file() or (beside and path.is_dir())):
            continue
        if beside and found["name"] != beside:  # (another entry's, whose name starts alike: hf.v2 beside hf)
            continue
        with contextlib.suppress(OSError):  # untouched for an hour too: containers sharing a host name and a cache
            if time.time() - path.stat().st_mtime < 3600:  # have process ids of their own, so a live one may look dead
                continue
        try:
            os.kill(int(found["pid"]), 0)
            continue  # still running (or another user's process): its write goes on
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed += 1
    return removed
