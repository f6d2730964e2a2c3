"""How aligned are two languages inside a trained run (the paper's section 4)?

Three views on held-out parallel probes (text no language saw in training): hidden states per
layer (clones position by position, a real pair by a maximum-weight token matching), gradients
per parameter tensor, and clone-pair embeddings against all pairs and by training frequency.
`align_run` writes RUN_DIR/alignment/alignment.json and its figures (`alignment_plots`) for the run's first two
languages, and alignment/pairs/A+B/ for any other pair of a run of more languages.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..config import GRAD_PRECISIONS, GRAD_SEQUENCES, PROBE_SEQUENCES
from ..data.corpora import language_names
from ..data.stream import find_language, pad_batch, pinned_budget_steps
from ..errors import XlingError
from ..fsio import atomic_write_json, read_json
from ..train.checkpoint_files import checkpoint_step
from ..train.precision import emulated_here
from ..train.rundir import RunDir
from ..train.session import load_session
from .alignment_plots import plot_embeddings, plot_gradients, plot_hidden
from .embeddings import clone_pairs, embedding_similarity, training_counts
from .probes import Probes, make_probes
from .representations import AlignedStates
from .word2vec import word2vec_control

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # emulated gradient precisions warned of in this process

# --------------------------------------------------------------------------- hidden states


def max_weight_matching(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight full bipartite matching of a score matrix [n_a, n_b]: (rows, cols) of the pairs.

    Every token of the shorter side is matched, as with the networkx
    `minimum_weight_full_matching` on negated scores that the paper's authors used; the
    Hungarian algorithm (scipy) solves it directly from the matrix, without building a graph.
    """
    return linear_sum_assignment(scores, maximize=True)


@torch.no_grad()
def _states(model, seqs: list[torch.Tensor], device, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [L, B, T, D] (fp32) of a batch of inputs, and their lengths."""
    ids, lengths = pad_batch([s[:-1] for s in seqs])
    with autocast():
        states = model.hidden_states(ids.to(device))
    return torch.stack(states).float().cpu(), lengths


def language_means(model, setup, lang: int, seq_len: int, device, autocast, windows: int = 100,
                   batch_size: int = 16) -> torch.Tensor:
    """A language's mean hidden state per layer [L, D], over windows of its validation text: text
    that no alignment probe is, so the centred measures are not centred on what they score."""
    text = setup.language_tokens(lang, "valid")  # in the language's word order, as it trained: one stream
    n = min(windows, (len(text) - 1) // seq_len)
    if n < 1:
        raise XlingError(f"the valid split has fewer than {seq_len + 1} tokens: no language means for the centred "
                         "alignment measures; use a corpus with more held-out text")
    seqs = list(text[torch.arange(n)[:, None] * seq_len + torch.arange(seq_len + 1)])
    total = sum(_states(model, seqs[i:i + batch_size], device, autocast)[0].sum((1, 2))
                for i in range(0, n, batch_size))
    return total / (n * seq_len)


def _batches_with_partners(n: int, batch_size: int) -> list[tuple[list[int], int]]:
    """Probe indices in batches, each with how many of its first entries have a shuffled partner:
    probe k (k < n // 2) in the batch's first half, probe k + n // 2 at the same place in its second
    half. Consecutive probes are neighbouring text (the next verse, the next window), so a partner
    half the probes away is unrelated text (with 4 or more probes); each probe's states are still
    computed once. A batch holds at least a probe and its partner (two, even for batch_size 1); with
    an odd number of probes the last one has no partner."""
    half, step = n // 2, max(1, batch_size // 2)
    batches = [(list(range(s, min(s + step, half))) + list(range(s + half, min(s + step, half) + half)),
                min(s + step, half) - s) for s in range(0, half, step)]
    return batches + ([([n - 1], 0)] if n % 2 else [])


def hidden_similarity(model, probes: Probes, device, autocast, batch_size: int = 16,
                      means: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Per-layer cosine of the two languages' hidden states, averaged over probe sequences (the paper's).

    Also a shuffled baseline (each side paired with the other side of a probe half the probes away,
    `_batches_with_partners`), which shows how similar unrelated text looks in that layer
    (anisotropy; for a real pair, also what the token matching alone finds); and, given each
    language's mean hidden state per layer (`means`), the centred cosine (with its own shuffled
    baseline), linear CKA and translation retrieval of `representations` on the same token pairs.
    """
    per_seq, baseline = [], []
    aligned = AlignedStates(*means) if means is not None else None
    for idx, m in _batches_with_partners(len(probes), batch_size):
        ha, len_a = _states(model, [probes.a[k] for k in idx], device, autocast)
        hb, len_b = _states(model, [probes.b[k] for k in idx], device, autocast)
        ua, ub = F.normalize(ha, dim=-1), F.normalize(hb, dim=-1)
        shuffled = [(i, i + m) for i in range(m)] + [(i + m, i) for i in range(m)]
        for store, pairs in ((per_seq, [(i, i) for i in range(len(idx))]), (baseline, shuffled)):
            for i, j in pairs:
                if probes.positional:  # clones: token t of one side is token t of the other
                    rows = cols = torch.arange(int(min(len_a[i], len_b[j])))
                else:  # a real pair: tokens matched on the layer-averaged cosine
                    cos = ua[:, i, :len_a[i]] @ ub[:, j, :len_b[j]].transpose(1, 2)  # [L, Ta, Tb]
                    rows, cols = map(torch.as_tensor, max_weight_matching(cos.mean(0).numpy()))
                store.append((ua[:, i, rows] * ub[:, j, cols]).sum(-1).mean(-1))
                if aligned is not None:
                    (aligned.add if store is per_seq else aligned.add_baseline)(ha[:, i, rows], hb[:, j, cols])
    layers = torch.stack(per_seq).nanmean(0).tolist()
    result = {"method": "positional" if probes.positional else "matching", "sequences": len(probes),
              "layers": layers, "mean": float(np.mean(layers)),
              "shuffled_baseline": torch.stack(baseline).nanmean(0).tolist() if baseline else [float("nan")] * len(layers)}
    return result | (aligned.result() if aligned is not None else {})


# --------------------------------------------------------------------------- gradients

# Every tensor of a block, as the paper's mean has them. Its key bias gets a gradient of zero in exact
# arithmetic (a constant added to all of a row's scores leaves the softmax unchanged), so its cosine is
# one of rounding noise: the mean without it is reported beside.
BLOCK_TENSORS = ("ln_1.weight", "ln_1.bias", "q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias",
                 "o.weight", "o.bias", "ln_2.weight", "ln_2.bias", "fc.weight", "fc.bias", "proj.weight", "proj.bias")
KEY_BIAS = "k.bias"


def check_grad_precision(precision) -> None:
    if precision not in GRAD_PRECISIONS:
        raise XlingError(f"the gradient precision (--grad-precision, grad_precision) is one of "
                         f"{', '.join(GRAD_PRECISIONS)}; got {precision!r}")


def gradient_precision(precision: str, device: torch.device) -> str:
    """The precision gradients are taken in: "auto" is the authors' (fp16 autocast on a GPU, as in their
    compare_representations.py; fp32 on a CPU, where their code turns autocast off)."""
    return ("fp16" if device.type == "cuda" else "fp32") if precision == "auto" else precision


def _gradients(model, seq: torch.Tensor, device, precision: str) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    seq = seq.to(device)
    # fp16 as the authors: autocast without loss scaling (the weights and their gradients stay fp32)
    with torch.autocast(device.type, dtype=torch.float16, enabled=precision == "fp16"):
        loss = model.loss(seq[None, :-1], seq[None, 1:])
    loss.backward()
    return {name: p.grad.detach().flatten().clone() for name, p in model.named_parameters() if p.grad is not None}


def gradient_similarity(model, probes: Probes, device, max_sequences: int = GRAD_SEQUENCES,
                        precision: str = "fp32") -> dict:
    """Per-tensor cosine between the loss gradients of the two versions of each probe sequence.

    `precision`: "fp32", or "fp16" autocast as the authors took them on a GPU (its rounding is
    part of what the paper's mean averages: the key bias's cosine below is nothing else). Block
    tensors (attention, MLP, LayerNorm of each layer) are what the paper reports; embedding and
    output rows of clones differ by construction, so those tensors are listed apart under "other".
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    n, nonfinite = min(max_sequences, len(probes)), 0
    for i in range(n):
        ga, gb = (_gradients(model, probes.a[i], device, precision), _gradients(model, probes.b[i], device, precision))
        if not all(bool(g.isfinite().all()) for g in (*ga.values(), *gb.values())):
            nonfinite += 1  # fp16 without loss scaling can overflow: such a sequence would make its tensors' means nan
            continue
        for name in ga.keys() & gb.keys():
            sums.setdefault(name, []).append(float(F.cosine_similarity(ga[name], gb[name], dim=0)))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if nonfinite:
        log.warning(f"{nonfinite} of {n} probe sequences gave gradients that are not finite in {precision} and were "
                    "left out of the gradient cosines (`nonfinite` in alignment.json)")
    mean = {name: float(np.mean(v)) for name, v in sums.items()}
    n_layers = len(model.blocks)
    table = {t: [mean.get(f"blocks.{layer}.{t}", float("nan")) for layer in range(n_layers)] for t in BLOCK_TENSORS}
    block_mean = lambda names: float(np.nanmean([v for t in names for v in table[t]]))
    other = {name: v for name, v in sorted(mean.items()) if not name.startswith("blocks.")}
    return {"sequences": n, "nonfinite": nonfinite, "precision": precision, "tensors": table,
            "block_mean": block_mean(BLOCK_TENSORS),
            "block_mean_without_key_bias": block_mean([t for t in BLOCK_TENSORS if t != KEY_BIAS]), "other": other}


def checked_pair(pair) -> tuple[str, str] | None:
    """Two language names, as given (a string is one name, not a pair); None for the run's first two."""
    if pair is None:
        return None
    if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(n, str) and n for n in pair)):
        raise XlingError(f"pair names two languages, e.g. ('EN1', 'EN2'); got {pair!r}")
    return tuple(pair)


def pair_indices(names: list[str], pair: tuple[str, str] | None) -> tuple[int, int]:
    """The pair's two languages in the run's order (its first two for None): every measure here is symmetric
    but translation retrieval, so a pair is one pair in either order."""
    a, b = sorted((find_language(names, pair[0]), find_language(names, pair[1]))) if pair else (0, 1)
    if a == b:
        raise XlingError("the pair (--pair) needs two different languages")
    return a, b


def pair_key(names: list[str], pair: tuple[str, str] | None) -> tuple[str, str] | None:
    """Which of the run's alignment folders a pair has (`RunDir.alignment_folder`): None for its first two."""
    a, b = pair_indices(names, pair)
    return None if (a, b) == (0, 1) else (names[a], names[b])


def run_language_names(run: RunDir) -> list[str]:
    """The run's languages, from its config read from anywhere (as `load_session` reads it), without its data."""
    return language_names(run.config_from_here(tolerant=True))


def _of(result: dict, languages: list[str]) -> bool:
    """Whether alignment results are of these two languages (either order), in the shape `align_run` writes."""
    found = result.get("languages")
    return (isinstance(found, list) and all(isinstance(name, str) for name in found)
            and sorted(found) == sorted(languages) and well_formed(result))


def well_formed(result: dict) -> bool:
    """Whether alignment results have the shape `align_run` writes, as far as what reads them relies on it (a received
    run's crafted file is computed again, not read into a traceback)."""
    hidden = result.get("hidden")
    return (isinstance(hidden, dict) and isinstance(hidden.get("layers"), list) and type(result.get("step")) is int
            and all(isinstance(result.get(part, {}), dict) for part in ("gradient", "embeddings", "word2vec")))


def of_pair(path: Path, languages: list[str], run: RunDir | None = None) -> dict:
    """The alignment results in `path` if they are of these two languages (either order) and, given the `run`, of the
    checkpoint it loads now (`RunDir.is_current_step`), else {}: an xling before 2026-11-29 wrote any pair's into
    alignment/, where the run's first two languages' now go, and an alignment taken while a run trained is of an
    earlier checkpoint."""
    result = read_json(path, {})
    current = _of(result, languages) and (run is None or run.is_current_step(result["step"]))
    return result if current else {}


def stored_pair(run_dir, pair: tuple[str, str] | None) -> tuple[Path, dict]:
    """Where a pair of the run's languages (given by name, in either order; None: its first two) has its
    alignment.json, and what that file holds of this pair ({} if nothing)."""
    run = RunDir(run_dir).require()
    names = run_language_names(run)
    key = pair_key(names, checked_pair(pair))
    path = run.alignment_file(key)
    return path, of_pair(path, list(key or names[:2]), run)


def align_run(run_dir, pair: tuple[str, str] | None = None, sequences: int = PROBE_SEQUENCES,
              grad_sequences: int = GRAD_SEQUENCES, batch_size: int = 16, word2vec: dict | None = None,
              device: str = "auto", figures: bool = True, cache_dir: Path | None = None, checkpoint: Path | None = None,
              grad_precision: str = "auto") -> dict:
    """All alignment metrics of one pair of a run's languages (its first two by default); writes
    RUN_DIR/alignment/alignment.json (+ PNGs), for another pair alignment/pairs/A+B/alignment.json.

    `word2vec`: None skips the control; a dict of knobs (possibly empty) runs it. `checkpoint`: one
    of the run's checkpoints instead of the latest (written to alignment/checkpoints/, no figures).
    `grad_precision`: see `gradient_precision`.
    """
    if sequences < 1 or grad_sequences < 0 or batch_size < 1:
        raise XlingError("sequences and batch_size must be >= 1 and grad_sequences >= 0 (--sequences, --batch-size, "
                          "--grad-sequences)")
    check_grad_precision(grad_precision)
    pair = checked_pair(pair)
    pair_key(run_language_names(RunDir(run_dir).require()), pair)  # an unknown language: said before loading
    unknown = set(word2vec or {}) - {"vector_size", "window", "epochs", "negative", "workers"}
    if unknown:
        raise XlingError(f"word2vec knobs are vector_size, window, epochs, negative and workers; got {sorted(unknown)}")
    session = load_session(run_dir, device=device, cache_dir=cache_dir, checkpoint=checkpoint)
    grad_precision = gradient_precision(grad_precision, session.device)
    if grad_sequences and (why := emulated_here(grad_precision, session.device)) and why not in _WARNED:
        _WARNED.add(why)  # once, not for every run and checkpoint
        log.warning(f"gradients in {grad_precision} (--grad-precision) are emulated on this CPU ({why}): many times "
                    "slower than fp32")
    setup, model, cfg = session.setup, session.model, session.cfg
    a, b = pair_indices(setup.names, pair)
    key = pair_key(setup.names, pair)
    timings, t0 = {}, time.perf_counter()
    probes = make_probes(cfg, setup, a, b, sequences)
    result = {"run": str(session.run.path), "languages": [setup.names[a], setup.names[b]],
              "kind": cfg.languages.kind, "schedule": cfg.languages.schedule,
              # many languages mix by shares (run.json's), not by p
              **({"shares": session.run.read_info(tolerant=True).get("shares")} if cfg.languages.corpora else
                 {"p": cfg.languages.p}),
              "step": session.step,
              "probes": probes.source,
              **({"probes_left_out": probes.left_out} if probes.left_out else {})}
    result["tokens"] = result["step"] * cfg.train.batch_size * cfg.model.seq_len if result["step"] else None
    means = tuple(language_means(model, setup, lang, cfg.model.seq_len, session.device, session.autocast,
                                 batch_size=batch_size) for lang in (a, b))
    result["hidden"] = hidden_similarity(model, probes, session.device, session.autocast, batch_size, means)
    result["hidden"]["sequences_asked"] = sequences  # (fewer probes than asked: the text has no more)
    timings["hidden"], t0 = time.perf_counter() - t0, time.perf_counter()
    if grad_sequences:
        result["gradient"] = gradient_similarity(model, probes, session.device, grad_sequences, grad_precision)
        timings["gradient"], t0 = time.perf_counter() - t0, time.perf_counter()
    clones = setup.source_of_language[a] == setup.source_of_language[b] and len(clone_pairs(setup.table, a, b)[0])
    if clones:
        budget_rows = pinned_budget_steps(cfg) * cfg.train.batch_size
        counts = training_counts(setup, setup.source_of_language[a], budget_rows, cfg.model.seq_len, cfg.train.seed)
        matrices = {"input": model.tok_emb.weight.detach().cpu(), "output": model.head.weight.detach().cpu()}
        result["embeddings"] = embedding_similarity(matrices, setup.table, a, b, counts)
        timings["embeddings"], t0 = time.perf_counter() - t0, time.perf_counter()
        if word2vec is not None:
            result["word2vec"] = word2vec_control(cfg, setup, a, b, counts, **word2vec)
            timings["word2vec"] = time.perf_counter() - t0
    elif word2vec is not None:
        result["notes"] = ["the word2vec control compares clone pairs (one piece in two cloned languages): this "
                           "pair has none, so it was not trained"]
    trained = session.run.read_info(tolerant=True).get("tokens") or {}
    for name in (n for n in result["languages"] if trained.get(n) == 0):
        result.setdefault("notes", []).append(f"{name} had no training tokens (a monolingual run): its states are "
                                              "those of an embedding never trained, so its alignment measures nothing")
    result["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    out = session.run.alignment_folder(key)
    if checkpoint is not None:
        atomic_write_json(session.run.alignment_at(checkpoint, key), result)
        return result
    earlier = read_json(out / "alignment.json", {})
    if key is None and earlier and not _of(earlier, result["languages"]):
        _move_other_pair(session.run, setup.names, earlier)
    _keep_earlier(result, earlier)
    atomic_write_json(out / "alignment.json", result)
    if figures:
        label = session.run.path.name
        plot_hidden({label: result}, out / "hidden.png")
        if "gradient" in result:
            plot_gradients(result["gradient"], out / "gradient.png", f"{label}: gradient cosine "
                           f"(block mean {result['gradient']['block_mean']:.3f})")
        if clones:
            plot_embeddings(result, out / "embeddings.png")
    return result


def _move_other_pair(run: RunDir, names: list[str], earlier: dict) -> None:
    """An xling before 2026-11-29 wrote another pair's results (`--pair`) into alignment/: they go to that pair's
    folder (unless it has its own), where the first two languages' results would otherwise replace them."""
    try:
        key = pair_key(names, tuple(earlier["languages"]))
    except (XlingError, KeyError, TypeError, ValueError):  # (no pair of this run's languages: nothing to keep)
        return
    if key is None or run.alignment_file(key).is_file():
        return
    folder = run.alignment_folder(key)
    folder.mkdir(parents=True, exist_ok=True)
    written = run.alignment_path.stat().st_mtime
    for figure in run.alignment_dir.glob("*.png"):  # its figures, written after it (older ones: another alignment's)
        if figure.stat().st_mtime >= written:
            figure.replace(folder / figure.name)
    for path in run.alignment_dir.glob("checkpoints/*.json"):  # its alignment over training
        if of_pair(path, list(key)):
            (folder / "checkpoints").mkdir(exist_ok=True)
            path.replace(folder / "checkpoints" / path.name)
    run.alignment_path.replace(run.alignment_file(key))


def _keep_earlier(result: dict, earlier: dict) -> None:
    """Keep what an earlier alignment.json of the same pair has and this one skipped (a rerun
    without --word2vec, or with --grad-sequences 0, must not delete those results). The word2vec
    control depends on the training stream only; gradients only if from the same checkpoint step.
    Their names go to result["kept"]. Both measures are symmetric, so the pair counts in either order."""
    if not _of(earlier, result["languages"]):  # (a crafted file keeps nothing)
        return
    kept = [key for key, same_source in (("word2vec", "embeddings" in result),
                                         ("gradient", earlier.get("step") == result["step"]))
            if key in earlier and key not in result and same_source]
    for key in kept:
        result[key] = earlier[key]
    if kept:
        result["kept"] = kept


def align_over_training(run_dir, reuse: bool = True, **options) -> list[dict]:
    """The alignment measures at every checkpoint the run kept (train.keep_checkpoints: log or all), in
    training order; each is computed once (alignment/checkpoints/) unless `reuse` is False."""
    run = RunDir(run_dir).require()
    checkpoints = run.checkpoint_dirs()
    if not checkpoints:
        raise XlingError(f"{run.path} has no checkpoints: train it first")
    train, newest = run.read_config().train, checkpoint_step(checkpoints[-1])
    written = newest // train.checkpoint_every + bool(newest % train.checkpoint_every)  # (the grid's, and a last one)
    if train.keep_checkpoints == "last" and len(checkpoints) < written:  # some were removed as training went on
        log.warning(f"{run.path} kept only its last checkpoints (train.keep_checkpoints: last): alignment over "
                    "training needs a run trained with keep_checkpoints log or all")
    options = {**options, "word2vec": None, "figures": False}  # word2vec is trained on the whole stream
    names = run_language_names(run)
    key = pair_key(names, checked_pair(options.get("pair")))
    kept = lambda c: of_pair(run.alignment_at(c, key), list(key or names[:2])) if reuse else {}
    return [kept(c) or align_run(run_dir, checkpoint=c, **options) for c in checkpoints]
