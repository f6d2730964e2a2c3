"""Per-language perplexity with the paper's evaluation protocol.

The test split of each language is one token stream. Windows of `window` input tokens start at
0, last_n, 2 * last_n, ...; only the last `last_n` targets of each window are scored, so every
scored token has at least window - last_n tokens of context and every scored token is scored
once. Perplexity is exp(mean cross-entropy) over the scored tokens.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import EvalConfig
from ..data.corpora import check_split_name
from ..data.stream import tokens_trained
from ..errors import XlingError
from ..fsio import atomic_write_json
from ..model_dims import resolve_model
from .rundir import PROTOCOL, RunDir
from .session import load_session


def window_starts(n_tokens: int, window: int, last_n: int) -> torch.Tensor:
    """Start offsets of the evaluation windows over a stream of n_tokens (inputs + 1 target)."""
    last_start = n_tokens - (window + 1)
    if last_start < 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.arange(0, last_start + 1, last_n)


def scored_positions(n_tokens: int, window: int, last_n: int) -> torch.Tensor:
    """Stream positions of the targets that are scored (for tests and documentation)."""
    starts = window_starts(n_tokens, window, last_n)
    return (starts[:, None] + torch.arange(window - last_n + 1, window + 1)).flatten()


def stream_nll(
    per_token_nll: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    window: int,
    last_n: int,
    batch_size: int = 32,
    max_tokens: int = 0,
    on_batch: Callable[[int], object] | None = None,
) -> tuple[float, int]:
    """Total negative log-likelihood and number of scored tokens of one stream.

    `per_token_nll(x, y)` returns the loss of every target, shape [B, window] (or of the last
    targets only, [B, k] with k >= last_n: only the last last_n columns are used). `on_batch(n)`
    is told of every n windows scored (a progress bar).
    """
    if max_tokens:
        tokens = tokens[:max_tokens]
    starts = window_starts(len(tokens), window, last_n)
    offsets = torch.arange(window + 1)
    total, count = 0.0, 0
    for chunk in starts.split(batch_size):
        windows = tokens[chunk[:, None] + offsets]
        nll = per_token_nll(windows[:, :-1], windows[:, 1:])[:, -last_n:]
        total += float(nll.double().sum())
        count += nll.numel()
        if on_batch:
            on_batch(len(chunk))
    return total, count


def perplexity_result(total_nll: float, count: int) -> dict:
    loss = total_nll / count if count else float("nan")
    ppl = float("nan") if not count else math.exp(loss) if loss < 709 else math.inf  # (exp overflows past ~709.78)
    return {"loss": loss, "ppl": ppl, "tokens_scored": count}


def windows_scored(n_tokens: int, window: int, last_n: int, max_tokens: int) -> int:
    """How many windows a stream of n_tokens gives under a protocol (0: no number, too short)."""
    return len(window_starts(min(n_tokens, max_tokens or n_tokens), window, last_n))


def too_short(setup, split: str, window: int, max_tokens: int, only: set[str] | None = None) -> dict[str, int]:
    """{language: its tokens} of the languages (of those in `only`) whose `split` is too short for one evaluation
    window: their perplexity would be no number."""
    short = {}
    for lang, name in enumerate(setup.names):
        if only is None or name in only:
            n = len(setup.tokens(setup.source_of_language[lang], split))
            if not windows_scored(n, window, 1, max_tokens):
                short[name] = n
    return short


def short_split_message(split: str, short: dict[str, int], window: int,
                        then: str = "give more text, or a smaller window (eval.window, xling eval --window)") -> str:
    name, n = next(iter(short.items()))
    return f"the {split} split of {name} has {n:,} tokens, fewer than one evaluation window of {window:,} (+1 target): {then}"


@torch.no_grad()
def evaluate_languages(model, setup, split: str, window: int, last_n: int, batch_size: int,
                       max_tokens: int, device, autocast, only: set[str] | None = None,
                       progress: bool = False) -> dict[str, dict]:
    """{language name: {loss, ppl, tokens_scored}} for every language of the run (or those in `only`);
    `progress`: a bar over the windows scored, on a terminal (a large test split takes a minute on a CPU)."""
    was_training = model.training
    model.eval()
    scored = [(lang, name) for lang, name in enumerate(setup.names) if only is None or name in only]
    # the bar's total (only for a bar: a word order moves a source's tokens and keeps their number)
    lengths = [len(setup.tokens(setup.source_of_language[lang], split)) for lang, _ in scored] if progress else []
    windows = sum(windows_scored(n, window, last_n, max_tokens) for n in lengths)
    bar = tqdm(total=windows, desc=f"scoring {split}", unit="window", disable=None if progress else True,
               leave=False, dynamic_ncols=True)

    def per_token_nll(x, y):  # only the last last_n targets are scored: the head runs on those alone
        with autocast():
            return model.loss(x.to(device), y.to(device), per_token=True, last_n=last_n).cpu()

    results = {}
    with bar:
        for lang, name in scored:
            tokens = setup.language_tokens(lang, split)
            results[name] = perplexity_result(*stream_nll(per_token_nll, tokens, window, last_n, batch_size,
                                                          max_tokens, bar.update))
    model.train(was_training)
    return results


def _tokens_at(session, info: dict) -> dict[str, int] | None:
    """Each language's training tokens at the evaluated checkpoint: run.json's where they are its step's, else
    counted from the run's plan (an earlier checkpoint: the newest did not verify, or an interrupted run); None
    if the run's length is unknown."""
    if session.step == info.get("step") and info.get("tokens"):
        return info["tokens"]
    if not info.get("steps") or session.step is None:
        return None
    return tokens_trained(session.cfg, session.setup, info["steps"], session.step, info.get("shares"))


def protocol_name(ev: EvalConfig) -> str:
    """How a file name tells an evaluation protocol apart: window, last_n and max_tokens."""
    return f"window{ev.window}_last{ev.last_n}_{ev.max_tokens or 'all'}"


def protocol(own: EvalConfig, window: int | None = None, last_n: int | None = None,
             max_tokens: int | None = None, seq_len: int = 0) -> EvalConfig:
    """A run's eval section with what is given instead (None: the run's own; with another window, last_n is a
    quarter of it, as a config's default; window 0: the model's length `seq_len`, last_n 0: a quarter of the
    window, as in a config)."""
    window = seq_len if window == 0 and seq_len else window
    if last_n == 0 or (window is not None and last_n is None):
        last_n = max(1, (window or own.window) // 4)
    given = {"window": window, "last_n": last_n, "max_tokens": max_tokens}
    return dataclasses.replace(own, **{k: v for k, v in given.items() if v is not None})


def evaluation_path(run: RunDir, own: EvalConfig, split: str, ev: EvalConfig) -> Path:
    """Where an evaluation under `ev` goes: the run's own file under its own protocol, else one of its own."""
    return run.eval_path(split, "" if protocol_name(ev) == protocol_name(own) else protocol_name(ev))


def evaluate_run(run_dir, split: str = "test", max_tokens: int | None = None, device: str = "auto",
                 trained_only: bool = False, window: int | None = None, last_n: int | None = None,
                 progress: bool = False):
    """Evaluate a run's latest checkpoint on every language; write eval.json (or eval_<split>.json).

    Returns (report, path). `max_tokens`, `window`, `last_n`: None uses the run's eval section; a protocol
    other than the run's is written to its own file (RunDir.eval_path), so a study never compares runs
    scored differently. `trained_only` skips languages the run never trained on (the other language of a
    monolingual ladder run: studies have no use for it). `progress`: a bar over the windows, on a terminal.
    """
    check_split_name(split)
    session = load_session(run_dir, device=device)
    study = session.run.own_protocol()  # a study's run: its study's window, last_n, max_tokens (what it compares)
    own = dataclasses.replace(session.cfg.eval, **{key: getattr(study, key) for key in PROTOCOL})
    seq_len = resolve_model(session.cfg.model, session.setup.model_vocab).seq_len
    ev = protocol(own, window, last_n, max_tokens, seq_len)
    if not 2 <= ev.window <= seq_len:
        raise XlingError(f"the window ({ev.window}) must be between 2 and the model's length ({seq_len})")
    if not 1 <= ev.last_n < ev.window:
        raise XlingError(f"last_n ({ev.last_n}) must be between 1 and the window - 1 ({ev.window - 1}), or 0 for a "
                         "quarter of the window")
    if ev.max_tokens < 0 or 0 < ev.max_tokens <= ev.window:
        raise XlingError(f"max_tokens {ev.max_tokens}: give 0 (the whole split) or more than one evaluation window "
                         f"({ev.window} tokens)")
    tokens = _tokens_at(session, session.run.read_info())  # before scoring: its failure loses no work
    only = {name for name, n in (tokens or {}).items() if n} if trained_only else None
    short = too_short(session.setup, split, ev.window, ev.max_tokens, only or None)
    if short:
        raise XlingError(short_split_message(split, short, ev.window))
    results = evaluate_languages(session.model, session.setup, split, ev.window, ev.last_n, ev.batch_size,
                                 ev.max_tokens, session.device, session.autocast, only or None, progress)
    broken = [name for name, r in results.items() if r["tokens_scored"] and not math.isfinite(r["ppl"])]
    if broken:  # nothing written: an eval.json of nan would read as a result (and break a study's report)
        raise XlingError(f"{run_dir}: the loss on {broken[0]}'s {split} text is {results[broken[0]]['loss']} at step "
                         f"{session.step}: no finite perplexity (the checkpoint's weights are not finite numbers, or far from any "
                         "trained model: a diverged or damaged run)")
    report = {"split": split, "window": ev.window, "last_n": ev.last_n, "max_tokens": ev.max_tokens,
              "step": session.step, "precision": session.precision, "languages": results, "tokens_trained": tokens}
    path = evaluation_path(session.run, own, split, ev)
    atomic_write_json(path, report)
    return report, path
