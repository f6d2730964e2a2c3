"""Live training logs for people who watch them: TensorBoard event files, an offline W&B run, a CSV.

The trainer hands every record it appends to metrics.jsonl (losses, learning rate, tokens/s,
tokens per language, validation perplexities) to a `LiveLog` as well, which writes it at once:

    RUN_DIR/tensorboard/   event files (needs the `tensorboard` package)
    RUN_DIR/wandb/         an offline W&B run (needs `wandb`; WANDB_MODE=online to sync while training)
    RUN_DIR/metrics.csv    one row per record (no package needed)

metrics.jsonl stays the truth: when training starts or resumes, each log is rewritten from the
records metrics.jsonl keeps, so a resumed run's logs hold every step once. `xling export-logs`
replays a finished run the same way. A logger whose package is missing is left out with one note
(`unavailable`); one that fails while training is dropped with a warning: training goes on. Loggers
only read numbers the trainer has already computed (no RNG, no device work).
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from ..errors import XlingError
from ..fsio import atomic_write_text
from .rundir import RunDir

LOGGERS = ("tensorboard", "wandb", "csv")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
log = logging.getLogger(__name__)


def logger_names(loggers) -> tuple[str, ...]:
    """The loggers asked for: one name, or several."""
    return (loggers,) if isinstance(loggers, str) else tuple(loggers)


def missing_package(name: str) -> str | None:
    """Why logger `name` cannot run here (its package is missing, and how to install it), else None."""
    if name not in LOGGERS:
        raise XlingError(f"unknown logger {name!r}: one of {', '.join(LOGGERS)}")
    package = _PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        return f"its package is missing (pip install 'xling[{name}]')"
    return None


def unavailable(name: str) -> str | None:
    """The note to show when logger `name` cannot run here (training goes on without it), else None."""
    reason = missing_package(name)
    return f"--log {name} skipped: {reason}" if reason else None


def scalars(record: dict) -> dict[str, float]:
    """A metrics record as named scalars: loss, lr, tokens_per_s, tokens/<lang>, valid_ppl/<lang>, ..."""
    out = {}
    split = record.get("split", "valid")
    for key, value in record.items():
        if key == "tokens" and isinstance(value, dict):
            out.update({f"tokens/{lang}": v for lang, v in value.items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            out[f"{split}_{key}" if key.startswith("ppl/") else key] = value
    return out


class LiveLog:
    """The loggers of one run. `begin` once the languages and the kept records are known, then
    `log` each new record, then `close` (or use it as a context manager)."""

    def __init__(self, run_dir: str | Path, names: tuple[str, ...] | list[str] = (), training: bool = True):
        self.run = RunDir(run_dir)
        self.training = training  # a logger's failure is a warning while training; an export (export-logs) fails
        self.notes = [note for name in names if (note := unavailable(name))]
        self.names = [name for name in dict.fromkeys(names) if not unavailable(name)]
        self.writers: dict[str, object] = {}

    def __bool__(self) -> bool:
        return bool(self.names)

    def __enter__(self) -> LiveLog:
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None:
            self.close()
        else:  # (a writer failing as it closes must not replace what is on its way out: Ctrl-C, an error)
            with contextlib.suppress(Exception):
                self.close()

    def begin(self, records: list[dict], languages: list[str]) -> None:
        """Start every logger afresh from the records metrics.jsonl keeps (none for a new run)."""
        self.close()
        rec = self.run.read_study_record()
        meta = {"study": rec.get("study", ""), "id": rec.get("id", self.run.path.name),
                "config": rec.get("config") or {}}
        for name in self.names:
            self._guard(name, lambda name=name: self.writers.__setitem__(
                name, _WRITERS[name](self.run, list(languages), meta)))
        for record in records:
            self.log(record)

    def log(self, record: dict) -> None:
        for name, writer in list(self.writers.items()):
            self._guard(name, lambda writer=writer: writer.write(record))

    def log_evaluation(self, report: dict) -> None:
        """An evaluation (eval.json's content) as a record of its split: test_ppl/<lang> at its step."""
        self.log({"step": report.get("step") or 0, "split": report.get("split", "test"),
                  **{f"ppl/{lang}": r["ppl"] for lang, r in (report.get("languages") or {}).items()}})

    def close(self) -> None:
        for name, writer in list(self.writers.items()):
            self._guard(name, writer.close)
        self.writers.clear()

    def _guard(self, name: str, action) -> None:
        """Run a logger's action; a failure drops that logger (one warning), never the training."""
        try:
            action()
        except Exception as exc:  # a logger's own problem (disk, package) must not stop training
            self.writers.pop(name, None)  # (not closed again on the way out)
            if not self.training:
                fix = ": make it writable, or free space" if isinstance(exc, OSError) else ""
                raise XlingError(f"cannot write {name} logs in {self.run.path} ({type(exc).__name__}: {exc}){fix}") \
                    from None
            if name in self.names:
                self.names.remove(name)
                log.warning(f"{name} logging stopped for {self.run.path} ({type(exc).__name__}: {exc}); training goes on")


class _TensorBoard:
    def __init__(self, run: RunDir, languages: list[str], meta: dict):
        from torch.utils.tensorboard import SummaryWriter

        out = run.export_dir("tensorboard")
        shutil.rmtree(out, ignore_errors=True)  # rewritten from metrics.jsonl: every step once
        self.writer = SummaryWriter(str(out))

    def write(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record["step"])
        self.writer.flush()  # on disk now, for a TensorBoard that watches the run

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run: RunDir, languages: list[str], meta: dict):
        import wandb

        out = run.export_dir("wandb")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        mode = {} if os.environ.get("WANDB_MODE") else {"mode": "offline"}  # offline unless the user says
        self.run = wandb.init(dir=str(run.path), project=f"xling-{meta['study'] or 'runs'}", name=meta["id"],
                              config=meta["config"], reinit=True, **mode)

    def write(self, record: dict) -> None:
        values = scalars(record)
        if record.get("split") == "test":
            self.run.summary.update(values)
        else:
            self.run.log(values, step=record["step"])

    def close(self) -> None:
        self.run.finish()


class _CSV:
    """metrics.csv: step, split (train, valid, test), loss, lr, tokens_per_s, tokens/<lang>, ppl/<lang>."""

    def __init__(self, run: RunDir, languages: list[str], meta: dict):
        self.columns = (["step", "split", "loss", "lr", "tokens_per_s"] + [f"tokens/{lang}" for lang in languages]
                        + [f"ppl/{lang}" for lang in languages])
        self.path = run.path / "metrics.csv"
        atomic_write_text(self.path, ",".join(self.columns) + "\n")
        self.file = open(self.path, "a", encoding="utf-8", newline="")
        self.rows = csv.DictWriter(self.file, self.columns, extrasaction="ignore", lineterminator="\n")  # (as the header)

    def write(self, record: dict) -> None:
        row = {k: v for k, v in record.items() if k in self.columns}
        row.update({f"tokens/{lang}": n for lang, n in (record.get("tokens") or {}).items()})
        row["split"] = record.get("split", "train")
        self.rows.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


_WRITERS = {"tensorboard": _TensorBoard, "wandb": _WandB, "csv": _CSV}
