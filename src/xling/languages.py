"""The paper's core idea as pure functions: languages as id tables, mixtures and schedules.

Every language of a run is one row of an id table `table[lang, base_id] -> model_id`:
- cloned languages: row l shifts base ids by l * V (pad 0 never shifts; with frac_clone < 1
  only a seeded subset of ids is shifted, the others are shared "anchor" ids);
- a real second language: row 1 maps the second tokenizer's ids into the combined vocabulary
  (disjoint: shift by V; anchored: identical piece strings share the first language's id).
Applying a language to a window of base ids is one gather, identical on CPU and GPU.

Which language a training sequence gets is a pure function of (seed, global row index) through
a counter-based hash, so resumed runs, gradient accumulation and several processes all see the
same data without sharing any random state.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import XlingError

PAD_ID = 0

# --------------------------------------------------------------------------- id tables


def clone_table(vocab_size: int, num_clones: int, frac_clone: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Id table for a base language plus `num_clones` clones: shape [1 + num_clones, V].

    With frac_clone < 1, a seeded subset of round(frac_clone * (V - 1)) ids is cloned (the same
    subset for every clone); the remaining ids stay shared by all languages. Pad is never cloned.
    """
    base = torch.arange(vocab_size)
    cloned = torch.zeros(vocab_size, dtype=torch.bool)
    candidates = np.arange(1, vocab_size)  # everything but pad
    n_cloned = round(frac_clone * len(candidates))
    chosen = np.random.default_rng(seed).permutation(candidates)[:n_cloned]
    cloned[torch.from_numpy(np.sort(chosen))] = True
    rows = [base] + [torch.where(cloned, base + lang * vocab_size, base) for lang in range(1, num_clones + 1)]
    return torch.stack(rows)


def merge_table(pieces_1: list[str], pieces_2: list[str], mode: str) -> tuple[torch.Tensor, int]:
    """Id table [2, V] and combined vocab size for two languages with their own tokenizers.

    disjoint: language-2 id i -> i + V1 (pad stays 0); combined size V1 + V2.
    anchored: a language-2 piece whose string exists in language 1 maps to that id; every other
      piece gets a new id V1, V1 + 1, ... in language-2 id order (as in the paper).
    Rows are padded to a common width with the pad id (such ids never occur).
    """
    v1, v2 = len(pieces_1), len(pieces_2)
    if mode == "disjoint":
        second = torch.arange(v2) + v1
        second[PAD_ID] = PAD_ID
        size = v1 + v2
    elif mode == "anchored":
        index_1 = {piece: i for i, piece in enumerate(pieces_1)}
        second = torch.empty(v2, dtype=torch.long)
        next_id = v1
        for i, piece in enumerate(pieces_2):
            if i == PAD_ID:
                second[i] = PAD_ID
            elif piece in index_1:
                second[i] = index_1[piece]
            else:
                second[i] = next_id
                next_id += 1
        size = next_id
    else:
        raise XlingError(f"vocabulary merge mode must be 'disjoint' or 'anchored', got '{mode}'")
    width = max(v1, v2)
    table = torch.full((2, width), PAD_ID, dtype=torch.long)
    table[0, :v1] = torch.arange(v1)
    table[1, :v2] = second
    return table, size


def identity_table(vocab_size: int, num_languages: int) -> torch.Tensor:
    """Languages sharing one tokenizer and one vocabulary (a jointly trained tokenizer)."""
    return torch.arange(vocab_size).expand(num_languages, vocab_size).clone()


def apply_languages(base_ids: torch.Tensor, langs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Map windows of base ids [B, T] into model ids, each row in its own language [B]."""
    return table[langs.to(table.device).unsqueeze(1), base_ids]


def inverse_table(table: torch.Tensor, model_vocab: int) -> torch.Tensor:
    """inverse[lang, model_id] = base id of that model id in `lang`, or -1 if lang lacks it."""
    n_langs, width = table.shape
    inverse = torch.full((n_langs, model_vocab), -1, dtype=torch.long)
    for lang in range(n_langs):
        # Shared ids appear once per language; scatter the base ids in reverse so the lowest wins.
        ids = torch.arange(width - 1, -1, -1)
        inverse[lang, table[lang, ids]] = ids
    return inverse


# --------------------------------------------------------------------------- mixtures


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based hash (SplitMix64 finaliser): uint64 -> well-mixed uint64."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniform(seed: int, stream: int, index: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers that depend only on (seed, stream, index)."""
    key = _splitmix64(np.array([seed * 1_000_003 + stream], dtype=np.uint64))
    mixed = _splitmix64(np.asarray(index, dtype=np.uint64) ^ key)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


LANGUAGE_STREAM = 1  # the hash stream used for language choice (other streams: data order)


def choose_languages(seed: int, rows: np.ndarray, p: np.ndarray | float, num_other: int) -> np.ndarray:
    """Language of each global row: 0 with probability 1 - p, else one of 1..num_other uniformly.

    One uniform number per row decides both: u < p picks a non-base language, and u / p
    (uniform on [0, 1) given u < p) picks which, so p is split evenly over the others.
    """
    u = uniform(seed, LANGUAGE_STREAM, rows)
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), u.shape)
    picked = u < p
    ratio = np.divide(u, p, out=np.zeros_like(u), where=picked)  # uniform on [0, 1) where picked
    other = 1 + np.minimum((ratio * num_other).astype(np.int64), num_other - 1)
    return np.where(picked, other, 0).astype(np.int64)


# --------------------------------------------------------------------------- schedules


def parse_schedule(text: str) -> list[float]:
    """'0.1_0.9' -> [0.1, 0.9]: K equal stages of training, each with its own total p."""
    parts = str(text).strip().split("_")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise XlingError(
            f"malformed schedule '{text}': write stage probabilities joined by '_', e.g. 0.1_0.9"
        ) from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise XlingError(f"schedule '{text}' has probabilities outside [0, 1]: {bad}")
    return values


def stage_of_step(step: np.ndarray | int, total_steps: int, num_stages: int) -> np.ndarray:
    """Stage index of each step when `total_steps` are split into `num_stages` equal stages."""
    step = np.asarray(step, dtype=np.int64)
    return np.minimum(step * num_stages // max(total_steps, 1), num_stages - 1)


def p_per_step(p: float, schedule: str, total_steps: int) -> np.ndarray:
    """Total non-base-language probability for every step of a run."""
    stages = parse_schedule(schedule) if schedule else [p]
    return np.asarray(stages)[stage_of_step(np.arange(total_steps), total_steps, len(stages))]


def language_plan(seed: int, total_steps: int, batch_size: int, p: float, schedule: str, num_other: int) -> np.ndarray:
    """The language of every training sequence of a run: shape [total_steps * batch_size]."""
    rows = np.arange(total_steps * batch_size)
    p_rows = np.repeat(p_per_step(p, schedule, total_steps), batch_size)
    return choose_languages(seed, rows, p_rows, num_other)


def tokens_per_language(plan: np.ndarray, rows_done: int, num_languages: int, seq_len: int) -> list[int]:
    """Exact number of training tokens each language has received after `rows_done` sequences."""
    counts = np.bincount(plan[:rows_done], minlength=num_languages)
    return [int(c) * seq_len for c in counts]
