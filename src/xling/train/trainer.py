"""The training loop: Adam, warm-up + cosine LR, accumulation, autocast, checkpoints, exact resume.

Resume is exact because everything that decides a step is either saved (weights, optimiser
moments, step) or a pure function of (seed, step) (the data, the learning rate).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..config import RunConfig, resolved
from ..data.stream import TrainStream, budget_steps, plan_tokens, prepare_languages, run_steps
from ..errors import XlingError, first_line
from ..fsio import make_dirs
from . import distributed
from .checkpoint_files import load_weights, restore_training
from .evaluate import evaluate_languages, short_split_message, too_short
from .live_log import LiveLog
from .lock import refuse_if_trained_elsewhere, training_lock
from .portable import RECORD, run_languages, save_languages
from .precision import autocast_factory, resolve_precision, run_precision, warn_if_emulated, warn_if_slower
from .rundir import RunDir
from .session import build_model, cpu_allocator_setup, pick_device
from .stopping import is_stop, stop_at_step_end

log = logging.getLogger(__name__)


def lr_at(step: int, total_steps: int, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup - 1)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The paper's Adam (no weight decay); the fused kernel (one op for all tensors) on CPU and GPU."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=device.type in ("cpu", "cuda"))


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, cache_dir: Path | None = None, live: LiveLog | None = None,
                 tested: bool = True):
        """`live`: loggers (TensorBoard, W&B, CSV) that get every metrics record as it is written; the
        caller closes them (after logging its test results, if it likes). `tested`: the caller scores the test
        split afterwards (a split too short for that is refused before training)."""
        self.cfg, self.run, self.cache_dir = resolved(cfg), RunDir(run_dir), cache_dir  # (eval.window 0: seq_len)
        self.tested = tested
        self.live = live or LiveLog(run_dir)
        self.steps_done = None  # the step this process has taken the run to (run.json's step after Ctrl-C)
        self.stopped_together = False  # torchrun's processes agreed to stop

    # ------------------------------------------------------------------ set-up
    def _check_run_dir(self, resume: bool) -> None:
        """Refuse to overwrite a run, or to resume it with another config; choose the checkpoint
        to resume from (self.resume_from)."""
        self.resume_from = None
        self.run.check_own()
        # a start that failed before training (a full disk, say) left config.yaml, perhaps tokenizers: no run yet
        if not self.run.exists() or not (self.run.info_path.is_file() or self.run.checkpoint_dirs()):
            return
        refuse_if_trained_elsewhere(self.run.path)  # (not "pass --resume": that would be refused too)
        if not resume:
            raise XlingError(
                f"run directory {self.run.path} already exists: pass --resume (from Python: resume=True) to continue it, "
                "or choose another output directory"
            )
        self.run.check_resumes_with(self.cfg)
        self.resume_from = self.run.checkpoint_to_resume(self.cfg)
        if self.resume_from is None and self.run.checkpoint_dirs():
            log.warning("no checkpoint verifies: training starts again at step 0")

    def _check_same_text(self, recorded) -> None:
        """Refuse to resume on training text other than the run's (a corpus file edited since it started): the run
        would go on over other sequences than it began with, not as if never interrupted. (Runs that began before
        run.json recorded it are not checked.)"""
        for name, digest in (recorded or {}).items():
            now = self.training_text.get(name)
            if now is not None and now != digest:
                raise XlingError(f"--resume: the training text of {name} has changed since {self.run.path} started (its "
                                 f"tokens' SHA-256 was {str(digest)[:12]}…, is {now[:12]}…): restore the text it "
                                 "trained on, or train a new run in another directory")

    def prepare(self, resume: bool) -> None:
        """Validate everything and build data and model, writing nothing into the run directory (`fit` takes the
        run's lock between the two)."""
        self.check(resume)
        self.build(resume)

    def check(self, resume: bool) -> None:
        """The run's settings, directory and device; writes nothing."""
        cfg = self.cfg
        self.world = distributed.world_from_env()
        if cfg.train.batch_size % (self.world.size * cfg.train.grad_accum):
            raise XlingError(f"train.batch_size ({cfg.train.batch_size}) must be divisible by the number of processes "
                             f"({self.world.size}) times train.grad_accum ({cfg.train.grad_accum})")
        self._check_run_dir(resume)
        self.device = pick_device(cfg.train.device, self.world.local_rank)
        distributed.init(self.world, self.device)

    def build(self, resume: bool) -> None:
        """The run's languages and data (prepared where not cached yet: minutes at paper scale), model and optimiser."""
        cfg = self.cfg
        with distributed.main_first(self.world):  # one process builds the tokenizer / token caches
            # A run resumed from a checkpoint: its own copies of its tokenizers and id table. One that starts at step 0
            # again (no checkpoint yet) builds them from its config, which may have been edited since its first start.
            self.setup = (run_languages(self.run, cfg, self.cache_dir, session=False) if self.resume_from is not None
                          else prepare_languages(cfg, self.cache_dir))
            self.steps = run_steps(cfg, self.setup)
            self.budget_steps = budget_steps(self.setup, cfg)
        self.stream = TrainStream.of_run(cfg, self.setup, self.steps)
        self.training_text = self.setup.training_text()
        if self.resume_from is not None:
            self._check_same_text(self.run.read_info(tolerant=True).get("training_text"))
        self.trained = {name for name, n in self.tokens_seen(self.steps).items() if n}  # (a ladder run: one language)
        self._check_held_out_splits(resume)
        # passes over each language's training text by the run's end (run.json's data_epochs; > 1: repeats)
        self.passes = {self.setup.names[self.setup.source_of_language.index(s)]: e
                       for s, e in self.stream.epochs(self.steps * cfg.train.batch_size).items()}
        repeated = {name: e for name, e in self.passes.items() if e > 1}
        if repeated and self.world.is_main and not resume:  # (the paper never repeats data; a study report says so)
            readers = {name: [n for n, s in zip(self.setup.names, self.setup.source_of_language) if n in self.trained
                              and s == self.setup.source_of_language[self.setup.index(name)]] or [name]
                       for name in repeated}
            log.warning(f"{self.steps} steps read the training text more than once: " + ", ".join(
                (f"{name} {e:.2f} passes" if len(readers[name]) == 1 else
                 f"the text of {', '.join(readers[name])} (clones read one text) {e:.2f} passes")
                for name, e in repeated.items()) + "; sequences repeat")
        if cfg.train.warmup >= self.steps and self.world.is_main and not resume:  # (said when it started)
            log.warning(f"train.warmup ({cfg.train.warmup}) is not below the run's {self.steps} steps: the learning "
                        f"rate never reaches train.lr nor decays; lower train.warmup")
        if self.device.type == "cpu":
            cpu_allocator_setup()
        self.model = build_model(cfg, self.setup, self.device)
        if cfg.train.compile:
            for block in self.model.blocks:
                block.compile()
            # and on a GPU the loss's softmax: one fused kernel instead of ~10 passes over the logits (GPT-small on
            # an H200: 1.13x the step; on a CPU it did not pay, README)
            self.model.fused_softmax = self.device.type == "cuda"
        self.net = distributed.wrap(self.model, self.world, self.device)  # what the training step calls
        self.optimizer = make_optimizer(self.model, cfg.train.lr, self.device)
        earlier = self.run.trained_precisions() if self.resume_from is not None else []
        trained_in = earlier[-1] if earlier else None
        precision = None  # torchrun: every process as the first one decides (other machines might measure otherwise)
        if self.world.is_main:
            warn_if_emulated(cfg.train.precision, self.device, self.cache_dir)
            if self.resume_from is None:  # (a resume goes on as it started)
                warn_if_slower(cfg.train.precision, self.device, self.cache_dir)
            precision = resolve_precision(run_precision(cfg.train.precision, trained_in, self.device), self.device,
                                          self.cache_dir)
        self.autocast, self.precision = autocast_factory(distributed.from_main(self.world, precision, self.device),
                                                         self.device)
        self.precisions = earlier + [self.precision] if earlier[-1:] != [self.precision] else earlier
        if trained_in not in (None, self.precision) and self.world.is_main:  # (auto, where it is not native here)
            log.warning(f"{self.run.path} trained in {trained_in}, which this device does not multiply natively, and "
                        f"goes on in {self.precision}: its losses now differ from an uninterrupted run's")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def _check_held_out_splits(self, resume: bool) -> None:
        """A test split too short for one evaluation window is refused (its result would be no number); a valid split
        so short leaves its language out of the validations, said once."""
        ev, scored = self.cfg.eval, self._scored()  # every language; a study's run, those it trains on
        short = too_short(self.setup, "test", ev.window, ev.max_tokens, scored) if self.tested else {}
        if short:
            raise XlingError(short_split_message("test", short, ev.window))
        short = too_short(self.setup, "valid", ev.window, ev.max_tokens, scored)
        self.validated = {name for name in scored or self.setup.names if name not in short}
        if short and self.world.is_main and not resume:
            log.warning(short_split_message("valid", short, ev.window, f"{', '.join(short)} not validated during "
                                            "training (more text or a smaller eval.window would be)"))

    def tokens_seen(self, step: int) -> dict[str, int]:
        return plan_tokens(self.stream.plan, step, self.cfg, self.setup.names)

    def _state(self, step: int) -> dict:
        return {"step": step, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state()}

    def _restore(self) -> int:
        """Continue from self.resume_from; returns the step training goes on from (0: none)."""
        step = 0
        if self.resume_from is not None:
            load_weights(self.resume_from, self.model, map_location=self.device)
            step = restore_training(self.resume_from, self.optimizer, self.scaler)
        if self.world.is_main:
            self.run.remove_partial_checkpoints()
            self.run.truncate_metrics(step)  # steps after `step` are trained, and logged, again
        return step

    # ------------------------------------------------------------------ loop
    def validate(self, step: int, split: str = "valid", progress: bool = False) -> dict:
        ev = self.cfg.eval
        results = evaluate_languages(self.model, self.setup, split, ev.window, ev.last_n, ev.batch_size,
                                     ev.max_tokens, self.device, self.autocast, self.validated, progress)
        self._record({"step": step, "split": split, **{f"ppl/{k}": v["ppl"] for k, v in results.items()}})
        return results

    def _scored(self) -> set[str] | None:
        """The languages the run scores: all (None), but a study's run only those it trains on, as its test evaluation
        does (the other language of a monolingual ladder run: studies have no use for it, and it would double the
        validation's time)."""
        return self.trained if self.run.study_record_path.is_file() else None

    def _record(self, record: dict) -> None:
        """Append a metrics record, and show it to the live loggers."""
        self.run.append_metrics(record)
        self.live.log(record)

    def batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This process's micro-batches (inputs, targets) of `step`, on the device.

        Global rows step * batch_size ... are split evenly over the processes, and each share
        into grad_accum micro-batches: every layout trains on exactly the same rows.
        """
        cfg = self.cfg.train
        share = cfg.batch_size // self.world.size
        first = step * cfg.batch_size + self.world.rank * share
        x, y, _ = self.stream.rows(first, first + share)
        if self.device.type == "cuda":  # page-locked host memory: the copy runs while the GPU computes
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return list(zip(x.chunk(cfg.grad_accum), y.chunk(cfg.grad_accum)))

    def train_step(self, step: int) -> torch.Tensor:
        """One optimiser step; returns this process's mean loss as a device tensor (no host sync)."""
        cfg = self.cfg.train
        lr = lr_at(step, self.steps, cfg.lr, cfg.min_lr, cfg.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        micro_batches = self.batches(step)
        for i, (x, y) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not self.world.active else self.net.no_sync()
            with sync:  # DDP: average gradients once, after the last micro-batch
                with self.autocast():
                    loss = self.net(x, y)
                self.scaler.scale(loss / cfg.grad_accum).backward()
            total += loss.detach() / cfg.grad_accum
        if cfg.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def fit(self, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> dict:
        """Train to the end (or to `stop_at`, for tests of interruption). Returns run.json's content.

        Under torchrun every process trains; only rank 0 writes the run directory and validates,
        and the other ranks return {"status": ..., "step": ..., "rank": r}.
        """
        self.check(resume)  # (writes nothing)
        new = not self.run.path.exists()
        try:
            with contextlib.ExitStack() as held:  # (a refusal leaves the run, and the run.json of its holder, as they are)
                self._take_run(held, resume)  # before its data is prepared, which may take minutes
                try:
                    self.build(resume)
                except BaseException:  # bad data, Ctrl-C: nothing left behind but what was there
                    left = ({p.name for p in self.run.path.iterdir()} if new and self.world.is_main
                            and self.run.path.is_dir() else None)  # (never a second error over the first)
                    if left is not None and left <= {self.run.lock_path.name}:
                        shutil.rmtree(self.run.path, ignore_errors=True)
                    raise
                held.enter_context(self._threads_it_trained_with())
                try:
                    info = self._fit(resume, progress, stop_at)
                except BaseException as exc:  # not left "running" (after a kill -9 it still says so)
                    if is_stop(exc):  # Ctrl-C, SIGTERM, `| head`
                        self._record_end("interrupted", {} if self.steps_done is None else {"step": self.steps_done})
                    elif isinstance(exc, Exception):  # a full disk, say (a resume goes on from a checkpoint)
                        self._record_end("failed", {"error": first_line(exc)})
                    if self.stopped_together:  # torchrun: none leaves before rank 0 has written that (its agent
                        distributed.barrier(self.world)  # would send it SIGTERM, a second stop, while it writes)
                    raise
            # Tear the group down together: a rank leaving while rank 0 still validates and
            # writes makes gloo abort the process at exit.
            distributed.barrier(self.world)
            return info
        finally:
            distributed.shutdown(self.world)

    def _take_run(self, held: contextlib.ExitStack, resume: bool) -> None:
        """Hold the run's lock in `held` (one process trains a run at a time; under torchrun rank 0 holds it for all)
        and decide again under it whether, and from which checkpoint, the run resumes: another process may have
        trained it meanwhile. Under torchrun every rank follows rank 0's decision, a refusal included (a rank left
        alone would wait for rank 0 at its first collective)."""
        error = refusal = None
        if self.world.is_main:
            try:
                held.enter_context(training_lock(self.run.path))
                self._check_run_dir(resume)
            except Exception as exc:  # (a refusal, or a lock file that cannot be written)
                error, refusal = exc, first_line(exc)
        checkpoint = None if self.resume_from is None else str(self.resume_from)
        refusal, checkpoint = distributed.from_main(self.world, (refusal, checkpoint), self.device)
        if error is not None:
            raise error
        if refusal is not None:
            raise XlingError(f"rank 0 refused to train {self.run.path}: {refusal}")
        self.resume_from = None if checkpoint is None else Path(checkpoint)

    @contextlib.contextmanager
    def _threads_it_trained_with(self):
        """A resume computes with the thread count the run trained with (run.json's threads), and so goes on exactly
        as if never stopped: another count sums in another order, and over hundreds of steps that moves the results
        by whole percents, not only the last bits (a study's rerun may have fewer runs left, so more threads each)."""
        before = torch.get_num_threads()
        threads = self.run.trained_threads() if self.resume_from is not None else None
        if threads is None or threads == before or self.device.type != "cpu":  # (GPU: its kernels decide)
            yield
            return
        if not 1 <= threads <= (os.cpu_count() or 1):  # (not more threads than this machine has cores)
            if self.world.is_main:
                log.warning(f"{self.run.path} trained with {threads} threads and goes on with {before}: its results "
                            "now differ from an uninterrupted run's (over a run, by up to whole percents)")
            yield
            return
        if self.world.is_main:
            log.warning(f"{self.run.path}: resuming with the {threads} thread(s) it trained with, not {before}: a "
                        "resume goes on exactly only at the same thread count (run.json's threads)")
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _stop_here(self, stop) -> None:
        """Stop training after this step, its checkpoint written: the held signal's handler raises KeyboardInterrupt
        (run.json then says interrupted). Under torchrun every process stops so, after rank 0's checkpoint (one that
        left first would have torchrun's agent kill rank 0 while it writes)."""
        if self.world.active:
            self.stopped_together = True
            distributed.barrier(self.world)
        stop.deliver()
        if self.world.active:  # (a process that no signal reached itself)
            raise KeyboardInterrupt

    def _record_end(self, status: str, fields: dict) -> None:
        """run.json of a run stopped while it said "running" says how it stopped (the disk may take no more)."""
        if self.world.is_main and self.run.read_info(tolerant=True).get("status") == "running":
            with contextlib.suppress(OSError):
                self.run.update_info(status=status, **fields)

    def _check_finite(self, losses: list[float], first_step: int) -> None:
        """Stop a diverged run with what is needed to diagnose it, and mark it failed."""
        bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        if bad is None:
            return
        step = first_step + bad
        batch = self.cfg.train.batch_size
        counts = np.bincount(self.stream.plan[(step - 1) * batch: step * batch], minlength=self.setup.num_languages)
        mix = ", ".join(f"{name} {int(c)}" for name, c in zip(self.setup.names, counts))
        last = self.run.latest_checkpoint()
        message = (f"training diverged: loss {losses[bad]} at step {step} (sequences per language: {mix}); "
                   f"last good checkpoint: {last.name if last else 'none'}; lower train.lr or use --train.precision fp32")
        if self.world.is_main:
            self.run.update_info(status="failed", error=message)
        raise XlingError(message)

    def _fit(self, resume: bool, progress: bool, stop_at: int | None) -> dict:
        # One function, about 80 lines, on purpose: the training loop read top to bottom (restore,
        # run.json, steps with their logging, validation and checkpoints, the final record) in one place.
        cfg, run, main = self.cfg, self.run, self.world.is_main
        if main:
            make_dirs(run.path)
        start = self.steps_done = self._restore() if resume else 0
        info = {}
        trained = run.read_info(tolerant=True).get("processes", 1) if resume and start and main else self.world.size
        trained = trained if type(trained) is int else 1  # (a hand-edited file: no comparison to fail on)
        if trained != self.world.size:  # (the same rows, but gradients averaged in another order)
            log.warning(f"{run.path} trained in {trained} process{'es' * (trained != 1)} and goes on in "
                        f"{self.world.size}: its losses now differ from an uninterrupted run's in the last bits"
                        + (f" (resume it as it trained: torchrun --nproc_per_node {trained})" if trained > 1 else ""))
        if main:
            if not resume or not run.info_path.is_file() or run.read_config() != cfg:  # (a resume's new settings)
                run.write_config(cfg)
            # the run's own copy of its tokenizers and id table (train.portable), before run.json names them
            saved = {} if self.setup.from_run_copies else {RECORD: save_languages(run, self.setup)}
            mix = self.stream.mixture
            if mix.many:  # many languages: each one's share (temperature and UniMax: from the corpora's sizes)
                saved["shares"] = dict(zip(self.setup.names, mix.shares))
            info = run.update_info(
                status="running", xling_version=__version__, languages=self.setup.names, threads=torch.get_num_threads(),
                workdir=os.getcwd(),  # where its relative paths point (identity.resolve_relative)
                model_vocab=self.setup.model_vocab, parameters=self.model.num_parameters(),
                steps=self.steps, budget_steps=self.budget_steps,
                budget_tokens=self.budget_steps * cfg.train.batch_size * cfg.model.seq_len,
                tokens_per_step=cfg.train.batch_size * cfg.model.seq_len, precision=self.precision, precisions=self.precisions,
                training_text=self.training_text,  # (what a resume checks)
                device=str(self.device), processes=self.world.size, **saved,  # (the latest start's: a resume's)
            )
            if self.live:  # the loggers start from the records kept from before a resume
                self.live.begin(run.read_metrics(), self.setup.names)
        end = self.steps if stop_at is None else min(stop_at, self.steps)
        bar = _progress(start, self.steps, progress and main and start < end, cfg.name or run.path.name)  # (none: done)
        tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
        window = [time.perf_counter(), 0]  # since when, and how many steps, the tokens/s of the next record count
        pending = []

        def log_pending(done: int, stop_here: bool = False) -> bool:
            # One host sync (and one all-reduce) per log interval: the global mean loss of each step since the last,
            # and whether any process was asked to stop (so under torchrun all stop after the same step). Losses are
            # also checked before every checkpoint, so no checkpoint holds diverged weights.
            *losses, stops = distributed.mean_across(self.world, torch.stack(
                [*pending, torch.full_like(pending[-1], float(stop_here))]).float()).cpu().tolist()
            pending.clear()
            self._check_finite(losses, first_step=done - len(losses) + 1)
            rate = window[1] * tokens_per_step / max(time.perf_counter() - window[0], 1e-9)
            if main:
                self._record({"step": done, "loss": losses[-1], "losses": losses, "lr": self.optimizer.param_groups[0]["lr"],
                              "tokens_per_s": rate, "tokens": self.tokens_seen(done)})
            bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{rate:,.0f}")
            window[:] = [time.perf_counter(), 0]
            return stops > 0

        # Ctrl-C / SIGTERM: the step ends, is logged and checkpointed, then the run stops. Under torchrun the
        # processes agree on it at their next logged step (a signal may reach some of them only, or at other steps)
        alone = not self.world.active
        try:  # closed before an interrupt's message, not redrawn after it at exit
            with stop_at_step_end(at="at the end of this step" if alone else
                                  f"with the others at the next logged step (every {cfg.train.log_every})") as stop:
                for step in range(start, end):
                    pending.append(self.train_step(step))
                    done = self.steps_done = step + 1
                    window[1] += 1
                    regular = done % cfg.train.checkpoint_every == 0 or done == self.steps  # (a checkpoint's due)
                    due = done % cfg.train.log_every == 0 or done == end or regular
                    agreed = log_pending(done, stop.requested) if due or (alone and stop.requested) else False
                    bar.update(1)
                    if main and cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < self.steps:
                        self.validate(done)
                    if alone:  # its own stop (read once: one that comes from here on waits for the next step)
                        stopping = stop.requested
                        if stopping and pending:  # it came after the step (while logging or validating)
                            log_pending(done)
                    else:  # torchrun's processes: when one of them was asked, by the all-reduce of the logged losses
                        stopping = agreed
                    if main and (regular or stopping):
                        run.save_checkpoint(done, self.model, self._state(done), cfg, stop=not regular)
                    if stopping:
                        self._stop_here(stop)
                # (under torchrun, a stop asked after the last logged step is agreed on too)
                if not alone and distributed.any_across(self.world, stop.requested, self.device):
                    self._stop_here(stop)
        finally:
            bar.close()
        if not main:
            return {"status": "interrupted" if end < self.steps else "completed", "step": end, "rank": self.world.rank}
        if end < self.steps:
            return run.update_info(status="interrupted", step=end)
        valid = (self.validate(self.steps, progress=progress) if start < self.steps or "valid" not in info
                 else info["valid"])
        return run.update_info(status="completed", step=self.steps, tokens=self.tokens_seen(self.steps),
                               data_epochs={name: round(e, 4) for name, e in self.passes.items()}, valid=valid)


def _progress(start: int, total: int, enabled: bool, name: str):
    # Redrawing in place only works on a terminal; in logs, one line every 30 s is plenty.
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=total, initial=start, disable=not enabled, desc=name, unit="step", dynamic_ncols=True,
                mininterval=interval, leave=True)
