"""Where a model runs and how a trained run is loaded: device, precision, CPU set-up, sessions.

`load_session` is what evaluation, sampling and the analyses use to get a run's model ready.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..data.stream import LanguageSetup
from ..errors import XlingError
from ..model.gpt import GPT
from ..model_dims import resolve_model
from .checkpoint_files import checkpoint_step, load_weights, stored_parameters
from .lock import is_locked
from .portable import run_languages
from .precision import autocast_factory, run_precision, warn_if_emulated
from .rundir import RunDir

log = logging.getLogger(__name__)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The device: auto, cpu, cuda or cuda:N; under DDP on GPUs, this process's GPU (local_rank)."""
    if not isinstance(name, str):
        raise XlingError(f"device must be a name (auto, cpu, cuda or cuda:N), got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise XlingError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise XlingError(f"device {name} asked for, but no CUDA GPU is visible: use the device cpu")
    if kind == "cuda":
        gpu = int(index) if index else local_rank
        if gpu >= torch.cuda.device_count():
            if not index:  # torchrun started more processes on this machine than it has GPUs
                raise XlingError(f"process {local_rank} of this machine has no GPU of its own: it has "
                                 f"{torch.cuda.device_count()}; start at most that many (torchrun --nproc_per_node) "
                                 "or train on the CPU (--train.device cpu)")
            raise XlingError(f"device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 and up")
        torch.cuda.set_device(gpu)
        return torch.device("cuda", gpu)
    return torch.device("cpu")


def cpu_allocator_setup() -> None:
    """Keep freed memory in the process (glibc malloc) instead of returning it to the OS.

    By default glibc serves large blocks with fresh mmaps and trims the heap eagerly, so every
    step of a CPU run page-faulted its big tensors back in, at a large cost in system time
    (README, Performance). Memory now stays at its peak.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    # Both together: setting either alone turns off glibc's adaptive thresholds and is worse.
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt(m_mmap_threshold, 1 << 30)  # blocks up to 1 GB come from the heap ...
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)  # ... and the heap is not handed back


@dataclass
class Session:
    """A model ready to use: what `xling eval`, `sample` and the analyses load from a run dir."""

    cfg: RunConfig
    setup: LanguageSetup
    model: GPT
    device: torch.device
    autocast: object
    precision: str  # what autocast multiplies in: the run's own (`run_precision`)
    run: RunDir
    step: int  # the training step of the checkpoint loaded (run.json's step may be later: an interrupted run)


def build_model(cfg: RunConfig, setup: LanguageSetup, device: torch.device) -> GPT:
    torch.manual_seed(cfg.train.seed)
    dims = resolve_model(cfg.model, setup.model_vocab)
    try:
        return GPT(dims).to(device)
    except (RuntimeError, MemoryError) as exc:  # (PyTorch's out-of-memory is a RuntimeError on the CPU)
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc) and "out of memory" not in str(exc):
            raise
        gib = dims.num_parameters() * 4 / 2**30
        raise XlingError(f"the model ({dims.num_parameters():.3g} parameters, {gib:.1f} GiB of fp32 weights before "
                         f"the optimizer's two copies) does not fit in {device.type} memory: choose a smaller "
                         "model.preset or model.n_layers / d_model") from None


def load_session(run_dir: str | Path, device: str = "auto", cache_dir: Path | None = None,
                 checkpoint: Path | None = None, computes: bool = True) -> Session:
    """Load a run's config, languages (its own copies of its tokenizers and id table where it has
    them: train.portable) and latest good checkpoint (or the given one of its checkpoints).
    `computes`: the model will run (evaluation, sampling, analyses), so an emulated precision is
    worth a warning; an export only reads the weights."""
    run = RunDir(run_dir).require()
    cfg = run.config_from_here()
    ckpt = run.latest_checkpoint() if checkpoint is None else checkpoint
    if ckpt is None:  # (before its languages are set up: that may train tokenizers beside a run in training)
        if run.checkpoint_dirs():
            raise XlingError(f"no checkpoint of {run.path} verifies (see the warnings): restore its files, or train "
                             "the run again in a new directory")
        if is_locked(run.path):
            raise XlingError(f"{run.path} is training now and has no checkpoint yet: wait for its first one "
                             "(train.checkpoint_every steps)")
        raise XlingError(f"{run.path} has no usable checkpoint yet: train it first (xling train ... --resume)")
    edited = run.edited_since(ckpt)
    if edited:  # read as edited, it would be scored or labelled as another run (languages renamed, other books)
        raise XlingError(f"{', '.join(edited)} changed in {run.config_path} since checkpoint {ckpt.name} was "
                         "written: restore config.yaml (a run is read as it trained; only where its files are found, "
                         "and how it is evaluated, may change)")
    setup = run_languages(run, cfg, cache_dir)
    problem = run.checkpoint_problem(ckpt) if checkpoint is not None else None  # (latest_checkpoint verified it)
    if problem:
        raise XlingError(f"checkpoint {ckpt} cannot be used ({problem})")
    stored, expected = stored_parameters(ckpt), resolve_model(cfg.model, setup.model_vocab).num_parameters()
    if stored != expected:  # (before the model is built: a crafted config.yaml could ask for gigabytes)
        raise XlingError(f"checkpoint {ckpt} holds {stored:,} weights where the run's config makes a model of "
                         f"{expected:,}: it does not match the run's model config; restore the run from a copy")
    dev = pick_device(device)
    if dev.type == "cpu":
        cpu_allocator_setup()
    model = build_model(cfg, setup, dev)
    load_weights(ckpt, model, map_location=dev)  # the weights only: never training state
    model.eval()
    if computes:
        warn_if_emulated(cfg.train.precision, dev, cache_dir)
    precision = run_precision(cfg.train.precision, run.trained_precision(), dev)
    if not computes and precision == "auto":  # (an export only reads the weights: nothing to measure)
        precision = "fp32"
    autocast, precision = autocast_factory(precision, dev, cache_dir)
    return Session(cfg, setup, model, dev, autocast, precision, run, checkpoint_step(ckpt))
