"""A run is a directory. `RunDir` owns its layout (every path below is one of its methods) and
every write into it (all atomic).

    RUN_DIR/
      config.yaml        the resolved RunConfig
      run.json           status, sizes, per-language token counts, timings (rewritten atomically)
      metrics.jsonl      one JSON object per logged step / validation
      checkpoints/step_0000200/
        model.safetensors, training.safetensors, training.json, manifest.json (checkpoint_files.py);
                             the manifest says "stop": true where training was stopped (Ctrl-C, SIGTERM) off the
                             checkpoint_every grid
      eval.json          per-language test perplexity (`xling eval`); eval_<split>.json for other splits,
                         eval_<split>_<protocol>.json under another window, last_n or max_tokens
      alignment/         alignment.json and its figures (`xling align`); checkpoints/ per kept checkpoint
      transfer/          <task>-<language>.json (`xling transfer`)
      study.json         the study runner's record of the run
      .lock              locked by whoever trains the run (train.lock)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..config import (
    PRECISIONS,
    EvalConfig,
    RunConfig,
    dump_yaml,
    flatten,
    from_dict,
    load_yaml,
    resolved,
    to_dict,
    validate,
)
from ..errors import XlingError, a_kind
from ..fsio import atomic_write, atomic_write_json, atomic_write_text, make_dirs, read_json, sha256_file
from ..identity import LOCATION_KEYS, RESUMABLE_KEYS, config_differences, resolve_relative
from .checkpoint_files import (
    CHECKPOINT_FILES,
    CHECKPOINT_FORMAT,
    checkpoint_files,
    checkpoint_step,
)

KEEP_CHECKPOINTS = 2
_CHECKPOINT_NAME = re.compile(r"step_[0-9]{7}")

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # (PyTorch is imported where tensors are written: checkpoint_files.py)
    import torch

# --------------------------------------------------------------------------- run directory


PROTOCOL = ("window", "last_n", "max_tokens")  # the eval keys an evaluation's numbers depend on (batch_size does not)


RUN_STATUSES = ("running", "interrupted", "failed", "completed")  # what training writes in run.json
_STUDY_RECORD_KINDS = {"study": str, "group": str, "id": str, "error": str, "status": str, "config": dict, "dims": dict}


def _malformed_info(info) -> str:
    """What is wrong with run.json's content, or "": a received file's counts must be counts, and its status one that
    training writes (it is printed, and read as the run's state)."""
    if not isinstance(info, dict):
        return f"not a mapping of keys but {a_kind(info)}"
    bad = next((k for k in ("step", "steps", "budget_steps", "budget_tokens") if info.get(k) is not None
                and not (type(info[k]) is int and 0 <= info[k] <= 10**15)), None)
    if bad:
        return f"its {bad} is {info[bad]!r}, not a count (a whole number from 0 to 10^15)"
    status = info.get("status", "")
    return "" if status in RUN_STATUSES or status == "" else \
        f"its status is {status!r}, not one of {', '.join(RUN_STATUSES)}"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    info_path = property(lambda self: self.path / "run.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    alignment_dir = property(lambda self: self.path / "alignment")
    alignment_path = property(lambda self: self.path / "alignment" / "alignment.json")
    study_record_path = property(lambda self: self.path / "study.json")
    lock_path = property(lambda self: self.path / ".lock")

    def check_own(self) -> None:
        """xling writes into a run (checkpoints, metrics, alignment/, transfer/, logs, its lock) and prunes its
        checkpoints: a symbolic link out of it (in a run received from someone else, say) would make it write or
        delete elsewhere. Refused, with how to keep a run on another disk; links within the run (W&B's latest-run)
        are its own. (os.walk does not enter linked folders.)"""
        inside = os.path.realpath(self.path)
        for folder, dirs, files in os.walk(self.path):
            linked = next((path for path in (Path(folder) / name for name in dirs + files) if path.is_symlink()
                           and not Path(os.path.realpath(path)).is_relative_to(inside)), None)
            if linked:
                raise XlingError(f"{linked} is a symbolic link (to {os.path.realpath(linked)}): xling writes and "
                                 "deletes only a run's own files, so a run holds no links out of it; to keep a run on another "
                                 "disk, put the whole run directory there")

    def alignment_folder(self, pair: tuple[str, str] | None = None) -> Path:
        """Where a pair's alignment goes: alignment/ for the run's first two languages (None), alignment/pairs/A+B/
        for two others, named in the run's order (no language name has a +: a-b with c and a with b-c differ)."""
        return self.alignment_dir if pair is None else self.alignment_dir / "pairs" / f"{pair[0]}+{pair[1]}"

    def alignment_file(self, pair: tuple[str, str] | None = None) -> Path:
        return self.alignment_folder(pair) / "alignment.json"

    def alignment_files(self) -> list[Path]:
        """Every pair's alignment.json there is: the first two languages' first, then the other pairs'."""
        return [path for path in [self.alignment_path, *sorted(self.alignment_dir.glob("pairs/*/alignment.json"))]
                if path.is_file()]

    def alignment_at(self, checkpoint: Path, pair: tuple[str, str] | None = None) -> Path:
        """The alignment measures of one checkpoint (alignment over training)."""
        return self.alignment_folder(pair) / "checkpoints" / f"{Path(checkpoint).name}.json"

    def eval_path(self, split: str = "test", protocol: str = "") -> Path:
        """Where `xling eval` writes a split's perplexities: under the run's own protocol (its eval section)
        eval.json (test) or eval_<split>.json; under another eval_<split>_<protocol>.json, kept apart."""
        if protocol:
            return self.path / f"eval_{split}_{protocol}.json"
        return self.path / ("eval.json" if split == "test" else f"eval_{split}.json")

    def scored_as_configured(self, report: dict) -> bool:
        """Whether an evaluation (an eval*.json's content) used the run's own protocol: its eval section's window,
        last_n and max_tokens (what studies compare)."""
        own = self.own_protocol()
        return all(report.get(key) == getattr(own, key) for key in PROTOCOL)

    def own_protocol(self) -> EvalConfig:
        """The evaluation protocol the run is scored and compared under: its study's (study.json) for a study's run,
        whatever config.yaml was edited to; else config.yaml's."""
        study = self.read_study_record().get("config")
        with contextlib.suppress(XlingError, TypeError, AttributeError):  # a damaged record: config.yaml's
            if isinstance(study, dict) and study:
                cfg = resolved(from_dict(study))
                validate(cfg, recorded=True)
                return cfg.eval
        return self.read_config().eval

    def read_evaluation(self, path: Path, tolerant: bool = True) -> dict:
        """An evaluation file's content (eval*.json), checked: a finite perplexity >= 1 (nan: no token scored) for
        each language, each one of the run's (a damaged or crafted file is one line, never carried into a store or
        report). `tolerant`: {} where the file is missing or no JSON object (no evaluation, which a study redoes)."""
        report = read_json(path, **({"default": {}} if tolerant else {}))
        languages = report.get("languages") or {}
        if not isinstance(languages, dict):
            raise XlingError(f"{path}: 'languages' is not a mapping of language to results")
        names = self.read_info(tolerant=True).get("languages")
        names = [str(n) for n in names] if isinstance(names, list) else None  # (a crafted run.json: not checked)
        for lang, r in languages.items():
            if names is not None and lang not in names:
                raise XlingError(f"{path}: language {lang!r} is not one of the run's ({', '.join(names)})")
            ppl = r.get("ppl") if isinstance(r, dict) else None
            unscored = isinstance(ppl, float) and math.isnan(ppl) and not r.get("tokens_scored")
            if isinstance(ppl, bool) or not isinstance(ppl, (int, float)) or not (1 <= ppl < math.inf or unscored):
                raise XlingError(f"{path}: the perplexity of {lang} is {ppl!r}, not a number >= 1 (or nan, where no "
                                 "token was scored)")
        return report

    def eval_paths(self) -> list[Path]:
        """The run's evaluations under its own protocol, sorted: what studies compare."""
        return sorted(p for p in map(self.eval_path, ("test", "valid", "train")) if p.is_file())

    def export_dir(self, logger: str) -> Path:
        """Where a logger's export of the run goes (tensorboard/, wandb/)."""
        return self.path / logger

    def transfer_path(self, task: str, language: str) -> Path:
        """The result of fine-tuning on `task` (a name or a task file) in `language`."""
        return self.path / "transfer" / f"{Path(task).stem}-{language}.json"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def started(self) -> bool:
        """Whether a run was ever started here: its config, run.json, study.json or lock (a study's run holds its lock
        and study.json while its data is prepared, before config.yaml is written)."""
        return any(f.is_file() for f in (self.config_path, self.info_path, self.study_record_path, self.lock_path))

    def require(self) -> RunDir:
        """This run directory, if it holds a run of its own files; else one XlingError."""
        if not self.exists():
            if not self.path.exists():
                raise XlingError(f"{self.path} does not exist: pass the directory `xling train` wrote")
            runs = self.path.is_dir() and any(RunDir(d).started() for d in self.path.iterdir() if d.is_dir())
            what = ("a folder of runs (a study's?), not one run: pass one of them (a study's: its name and --root)"
                    if runs else "a file" if self.path.is_file() else "not a run directory (no config.yaml)")
            raise XlingError(f"{self.path} is {what}" + ("" if runs else ": pass the directory `xling train` wrote"))
        self.check_own()  # a received run's link out of it (to a file of yours) is neither read nor written through
        return self

    def check_resumes_with(self, cfg: RunConfig) -> list[str]:
        """Refuse to continue this run with `cfg` where it differs in what the run learns from (config.yaml);
        return how it differs in how the run is executed or evaluated ("eval.window 128 -> 64"), which a
        resume records in config.yaml, as if it had been edited there."""
        recorded = self.read_config()
        differ = config_differences(recorded, cfg, ignore=RESUMABLE_KEYS)
        if differ:
            raise XlingError(f"--resume: the config differs from the one saved in {self.path} in {', '.join(differ)}; "
                             "resume with the same config or start a new run")
        newest = self.checkpoint_dirs()[-1:]  # config.yaml edited since then (its checksums are for the resume)
        if newest:
            self._refuse_edited(newest[0], cfg)
        study, given = self.own_protocol() if self.study_record_path.is_file() else None, resolved(cfg).eval
        scoring = [k for k in PROTOCOL if study and getattr(given, k) != getattr(study, k)]
        if scoring:  # its study compares runs scored alike
            k = scoring[0]
            raise XlingError(f"--resume: eval.{k} {getattr(given, k)} differs from its study's {getattr(study, k)} "
                             f"({self.study_record_path}), which scores every run alike: keep the study's, score the run "
                             f"otherwise with xling eval {self.path} --window/--last-n/--max-tokens (a file of its own), "
                             "or delete study.json to make it a run of its own")
        changed = config_differences(recorded, cfg)
        old, new = flatten(to_dict(recorded)), flatten(to_dict(cfg))
        return [f"{key} {old[key]} -> {new[key]}" for key in changed]

    # config and info
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.config_path, dump_yaml(cfg))

    def read_config(self) -> RunConfig:
        """config.yaml, validated like any config: a run directory may come from someone else."""
        try:
            data = load_yaml(self.require().config_path)
            if not data:  # (an empty file would read as every default, and then not fit the run's checkpoint)
                raise XlingError(f"{self.config_path} is empty: the run's config is lost (damaged)")
            cfg = from_dict(data)
            validate(cfg, recorded=True)
            return resolved(cfg)  # (written resolved; a hand-edited eval.window 0 follows model.seq_len)
        except XlingError as exc:
            # A config key this version does not know usually means a newer xling wrote the run.
            written_by = self.read_info().get("xling_version")
            if written_by and written_by != __version__ and "unknown key" in str(exc):
                raise XlingError(f"{self.config_path}: {exc}; the run was written by xling {written_by} and this "
                                 f"is xling {__version__}: read it with that version or newer") from None
            raise

    def config_from_here(self, tolerant: bool = False) -> RunConfig:
        """config.yaml with its relative paths pointing where the run trained (run.json's workdir), so that a run is
        read from any directory (`identity.resolve_relative`); `tolerant`: as `read_info`'s."""
        return resolve_relative(self.read_config(), self.read_info(tolerant).get("workdir"))

    def read_info(self, tolerant: bool = False) -> dict:
        """run.json's content; {} before the run has started. A damaged file is an error, or {} when
        `tolerant` (the study runner then redoes the work the file would have recorded)."""
        if tolerant:
            info = read_json(self.info_path, default={})
            return info if not _malformed_info(info) else {}
        try:
            info = read_json(self.info_path) if self.info_path.is_file() else {}
            malformed = _malformed_info(info)
            if malformed:
                raise XlingError(f"{self.info_path}: {malformed}")
            return info
        except XlingError as exc:
            raise XlingError(f"{exc}: restore it from a copy of the run, or remove it (`xling train {self.path} "
                             "--resume` then goes on from the newest checkpoint and writes it again)") from None

    def trained_threads(self) -> int | None:
        """The CPU thread count the run trained with (run.json's threads), None where it has none (or not a number):
        another count sums in another order, so a resume or a rerun that keeps it computes the same numbers."""
        threads = self.read_info(tolerant=True).get("threads")
        return threads if type(threads) is int else None  # (not True, which is an int too)

    def trained_precision(self) -> str | None:
        """The precision the run trained in (run.json's precision, its latest start's), None where it has none."""
        return (self.trained_precisions() or [None])[-1]

    def trained_precisions(self) -> list[str]:
        """Every precision the run trained in, in order (run.json's precisions: a resume on another machine may have
        switched); [] where it records none."""
        info = self.read_info(tolerant=True)
        latest, switches = info.get("precision"), info.get("precisions")
        if latest not in PRECISIONS:
            return []
        if not (isinstance(switches, list) and all(p in PRECISIONS for p in switches) and switches[-1:] == [latest]):
            return [latest]  # (a hand-edited file: the latest)
        return [p for i, p in enumerate(switches) if not i or p != switches[i - 1]]  # (each switch once)

    def read_study_record(self) -> dict:
        """study.json's content, or {} when missing, unreadable or not of the types the runner writes (the runner then
        redoes the work; `xling status` calls it damaged)."""
        record = read_json(self.study_record_path, default={})
        wrong = any(not isinstance(record[key], kind) for key, kind in _STUDY_RECORD_KINDS.items() if key in record)
        return {} if wrong or type(record.get("attempts", 0)) is not int else record

    def update_info(self, **fields) -> dict:
        info = self.read_info()
        info.update(fields)
        atomic_write_json(self.info_path, info)
        return info

    # metrics
    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        """The logged records; a line that is not a record (cut short by a kill, or damaged: bad bytes,
        not JSON, no integer step) is skipped, so one bad line never stops a resume or a report."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_bytes().splitlines():
            try:
                record = json.loads(line)  # bytes: a bad UTF-8 byte is a ValueError like bad JSON
            except ValueError:
                continue  # the resumed run re-logs a step whose line was cut short
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records logged after the checkpoint we resume from (they will be logged again);
        after_step 0 (no checkpoint) drops them all."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    # checkpoints
    def save_checkpoint(self, step: int, model: torch.nn.Module, training: dict, cfg: RunConfig,
                        stop: bool = False) -> Path:
        """Write a checkpoint; the directory appears complete or not at all.

        `training` is {"step", "optimizer": its state_dict, "scaler": its state_dict, "torch_rng"}.
        Files are built in memory and written with atomic_write, so a full disk is an OSError.
        `stop`: written where training was stopped, off the checkpoint_every grid; removed once a later one is
        written (a finished run keeps the checkpoints of one never stopped).
        """
        files = checkpoint_files(step, model, training, to_dict(cfg), stop)
        self.remove_partial_checkpoints()
        make_dirs(self.checkpoints)
        final = self.checkpoints / f"step_{step:07d}"
        tmp = self.checkpoints / f".tmp-{final.name}"
        try:
            tmp.mkdir()  # the umask's permissions (mkdtemp would make it 0700)
            for name, data in files.items():
                with atomic_write(tmp / name) as f:
                    f.write(data)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in (d for d in self.checkpoint_dirs() if checkpoint_step(d) < step):  # a stop's has served now
            manifest = read_json(old / "manifest.json", default=None)
            if isinstance(manifest, dict) and manifest.get("stop") is True:
                shutil.rmtree(old, ignore_errors=True)
        for old in self.checkpoint_dirs()[:-KEEP_CHECKPOINTS]:
            if not _kept(checkpoint_step(old), cfg):
                shutil.rmtree(old, ignore_errors=True)
        return final

    def remove_partial_checkpoints(self) -> None:
        """Remove checkpoint directories a kill left half-written (they are never read)."""
        for tmp in self.checkpoints.glob(".tmp-step_*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def checkpoint_dirs(self) -> list[Path]:
        """The checkpoint directories, oldest first: step_ and seven digits; anything else there is
        not ours (never read, never pruned)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.glob("step_*") if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name))

    def newest_checkpoint_step(self) -> int:
        """The step of the newest checkpoint, 0 if none; not checksummed (a resume skips a damaged one)."""
        checkpoints = self.checkpoint_dirs()
        return checkpoint_step(checkpoints[-1]) if checkpoints else 0

    def is_current_step(self, step) -> bool:
        """Whether `step` is that of the checkpoint a command loads now: the newest that verifies (checksums are
        computed only where `step` is not the newest checkpoint's, as for a result taken while the run trained: a
        result of the newest checkpoint's step is taken as current without them)."""
        if step == self.newest_checkpoint_step():
            return True
        files = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for d in self.checkpoint_dirs()
                      for f in sorted(d.iterdir()) if f.is_file())
        return _verified_step(str(self.path), files) == step

    def checkpoint_problem(self, ckpt: Path) -> str | None:
        """Why a checkpoint cannot be trusted, or None if its files match the manifest."""
        manifest_path = ckpt / "manifest.json"
        if not manifest_path.is_file():
            return "no manifest"
        manifest = read_json(manifest_path, default=None)
        if not isinstance(manifest, dict):
            return "corrupt manifest"
        if "step" in manifest and manifest["step"] != checkpoint_step(ckpt):  # (a copy renamed: not that step)
            step = manifest["step"]
            return (f"its manifest is of step {step}, not {checkpoint_step(ckpt)}" if type(step) is int else
                    f"its manifest's step is {a_kind(step)}, not the number {checkpoint_step(ckpt)}")
        digests = manifest.get("sha256", {})
        if not (isinstance(digests, dict) and "model.safetensors" in digests  # (every format checksums the weights)
                and all(isinstance(d, str) and name in CHECKPOINT_FILES for name, d in digests.items())):
            return "its manifest's sha256 lacks the weights' digest or names other files"  # (never a path out of it)
        for name, digest in digests.items():
            if not (ckpt / name).is_file():
                return f"{name} missing"
            if sha256_file(ckpt / name) != digest:
                return f"{name} checksum mismatch"
        return None

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint whose checksums verify; damaged ones are reported (a warning) and skipped."""
        skipped = False
        for ckpt in reversed(self.checkpoint_dirs()):
            problem = self.checkpoint_problem(ckpt)
            if problem is None:
                if skipped:  # what a resume, an evaluation or an export uses instead
                    log.warning(f"using {ckpt.name} instead, the newest checkpoint that verifies")
                return ckpt
            skipped = True
            log.warning(f"skipping damaged checkpoint {ckpt.name} ({problem})")
        return None

    def checkpoint_to_resume(self, cfg: RunConfig) -> Path | None:
        """The latest good checkpoint, None if there is none; an XlingError if training cannot
        continue from it with `cfg` (another checkpoint format, or the config was edited)."""
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            return None
        manifest = read_json(ckpt / "manifest.json")
        written = manifest.get("format", 1)
        if written != CHECKPOINT_FORMAT:
            which = "a newer" if isinstance(written, int) and written > CHECKPOINT_FORMAT else "an older"
            raise XlingError(f"checkpoint {ckpt} was written by {which} xling in a format this version does not "
                             "read: finish the run with that version, or start it again in a new run directory")
        self._refuse_edited(ckpt, cfg)
        return ckpt

    def _refuse_edited(self, ckpt: Path, cfg: RunConfig) -> None:
        differ = self.edited_since(ckpt, cfg)
        if differ:
            raise XlingError(f"--resume: {', '.join(differ)} changed since checkpoint {ckpt.name} was written "
                             f"(in {self.config_path}): restore config.yaml or start a new run")

    def edited_since(self, ckpt: Path, cfg: RunConfig | None = None) -> list[str]:
        """The keys of `cfg` that differ from the config checkpoint `ckpt` was trained with, those of how it runs and
        is evaluated aside (RESUMABLE_KEYS); [] for a checkpoint that records none. Without `cfg`: config.yaml's, as
        the run is read (eval, export), so where its files are found may have changed too (LOCATION_KEYS)."""
        trained = read_json(ckpt / "manifest.json", default={}).get("config")
        if not isinstance(trained, dict):
            return []
        try:
            trained = from_dict(trained)
        except XlingError as exc:  # (a received run's manifest is checked like a config file)
            raise XlingError(f"{ckpt / 'manifest.json'}: its config: {exc}") from None
        ignore = RESUMABLE_KEYS if cfg is not None else (
            *RESUMABLE_KEYS, *LOCATION_KEYS, *(("languages.corpora",) if trained.corpus.name != "bible" else ()))
        return config_differences(trained, self.read_config() if cfg is None else cfg, ignore=ignore)


@functools.lru_cache(maxsize=1024)
def _verified_step(run: str, files: tuple) -> int | None:
    """The step of the newest checkpoint of `run` that verifies, hashed once per process while its checkpoints' files
    (`files`: names, times, sizes) stay as they are (a report asks for every run several times)."""
    latest = RunDir(run).latest_checkpoint()
    return None if latest is None else checkpoint_step(latest)


def _kept(step: int, cfg: RunConfig) -> bool:
    """Whether a checkpoint older than the last two stays (train.keep_checkpoints)."""
    policy, every = cfg.train.keep_checkpoints, cfg.train.checkpoint_every
    if policy == "log":  # checkpoint_every x a power of two: evenly spaced on a log axis of training tokens
        k, rest = divmod(step, every)
        return rest == 0 and k > 0 and k & (k - 1) == 0
    return policy == "all"
