"""Languages as id tables: the paper's cloned and merged vocabularies as pure functions.

Every language of a run is one row of an id table `table[lang, base_id] -> model_id`:
- cloned languages: row l shifts base ids by l * V (the pad, 0 for xling's tokenizers, never shifts; with frac_clone < 1
  only a seeded subset of ids is shifted, the others are shared "anchor" ids);
- a real second language: row 1 maps the second tokenizer's ids into the combined vocabulary
  (disjoint: shift by V; anchored: identical piece strings share the first language's id; the
  second language's pad is the first's, where both have one); more real languages alike (`merge_tables`).
Applying a language to a window of base ids is one gather, identical on CPU and GPU.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import XlingError
from ..fsio import atomic_write, default_cache_dir

PAD_ID = 0  # xling's pad; also what rows are padded with and pad_batch fills with (never attended to)

# --------------------------------------------------------------------------- id tables


def clone_table(vocab_size: int, num_clones: int, frac_clone: float = 1.0, seed: int = 0,
                pad_id: int | None = PAD_ID) -> torch.Tensor:
    """Id table for a base language plus `num_clones` clones: shape [1 + num_clones, V].

    With frac_clone < 1, a seeded subset of round(frac_clone * (V - 1)) ids is cloned (the same
    subset for every clone); the remaining ids stay shared by all languages. Pad is never cloned
    (a tokenizer without one, `pad_id` None: every id is a candidate).
    """
    base = torch.arange(vocab_size)
    cloned = torch.zeros(vocab_size, dtype=torch.bool)
    candidates = np.arange(vocab_size)
    if pad_id is not None:
        candidates = np.delete(candidates, pad_id)  # everything but pad
    n_cloned = round(frac_clone * len(candidates))
    chosen = np.random.default_rng(seed).permutation(candidates)[:n_cloned]
    cloned[torch.from_numpy(np.sort(chosen))] = True
    rows = [base] + [torch.where(cloned, base + lang * vocab_size, base) for lang in range(1, num_clones + 1)]
    return torch.stack(rows)


def merge_table(pieces_1: list[str], pieces_2: list[str], mode: str, pad_1: int | None = PAD_ID,
                pad_2: int | None = PAD_ID) -> tuple[torch.Tensor, int]:
    """Id table [2, V] and combined vocab size for two languages with their own tokenizers (`merge_tables`)."""
    return merge_tables([pieces_1, pieces_2], mode, [pad_1, pad_2])


def merge_tables(pieces: list[list[str]], mode: str, pads: list[int | None]) -> tuple[torch.Tensor, int]:
    """Id table [N, V] and combined vocab size for N languages, each with its own tokenizer (its pieces).

    disjoint: language l's id i -> i + V_0 + ... + V_(l-1) (its pad -> language 0's, where both have one);
      combined size V_0 + ... + V_(N-1).
    anchored: a piece whose string an earlier language has maps to the first such language's id; every other
      piece gets a new id V_0, V_0 + 1, ... in language order, then id order (for two languages, the paper's).
    Rows are padded to a common width with the pad id (such ids never occur).
    """
    if mode not in ("disjoint", "anchored"):
        raise XlingError(f"vocabulary merge mode must be 'disjoint' or 'anchored', got '{mode}'")
    rows, size = [torch.arange(len(pieces[0]))], len(pieces[0])
    index = {piece: i for i, piece in enumerate(pieces[0])}  # (a string twice in one tokenizer: its last id)
    for own, pad in zip(pieces[1:], pads[1:]):
        shared_pad = pads[0] is not None and pad is not None
        if mode == "disjoint":
            row = torch.arange(len(own)) + size
            size += len(own)
        else:
            row, new = torch.empty(len(own), dtype=torch.long), {}
            for i, piece in enumerate(own):
                if shared_pad and i == pad:
                    continue  # set below
                if piece in index:
                    row[i] = index[piece]
                else:
                    row[i] = new[piece] = size
                    size += 1
            for piece, i in new.items():  # later languages anchor on this one's new pieces too
                index.setdefault(piece, i)
        if shared_pad:
            row[pad] = pads[0]
        rows.append(row)
    table = torch.full((len(pieces), max(len(p) for p in pieces)), PAD_ID, dtype=torch.long)
    for lang, row in enumerate(rows):
        table[lang, :len(row)] = row
    return table, size


def identity_table(vocab_size: int, num_languages: int) -> torch.Tensor:
    """Languages sharing one tokenizer and one vocabulary (a jointly trained tokenizer)."""
    return torch.arange(vocab_size).expand(num_languages, vocab_size).clone()


# --------------------------------------------------------------------------- user-built tables


def check_table(table, num_languages: int | None = None, vocab_size: int | None = None) -> np.ndarray:
    """A user-built id table as int64 [languages, V], checked: whole numbers >= 0, ids below V x languages
    (the size of a fully cloned vocabulary), and the expected shape where given."""
    try:
        array = np.asarray(table)
    except (TypeError, ValueError) as exc:
        raise XlingError(f"an id table must be an integer array [languages, vocab_size] ({exc})") from None
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise XlingError(f"an id table must be an integer array [languages, vocab_size], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise XlingError(f"an id table must hold whole numbers (model ids), got dtype {array.dtype}")
    n, v = array.shape
    if num_languages is not None and n != num_languages:
        raise XlingError(f"the id table has {n} rows but the run has {num_languages} languages "
                         f"(languages.num_clones + 1): give one row per language")
    if vocab_size is not None and v != vocab_size:
        raise XlingError(f"the id table has {v} columns but the tokenizer has {vocab_size} ids "
                         "(tokenizer.vocab_size): give one model id per base id")
    if array.min() < 0 or array.max() >= n * v:
        raise XlingError(f"id table values must be model ids in [0, {n * v}) (V x languages), "
                         f"got {array.min()} to {array.max()}")
    return array.astype(np.int64)


def _table_key(array: np.ndarray) -> str:
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()[:16]


def save_table(table, cache_dir: Path | None = None) -> Path:
    """Write a checked id table to CACHE/id-tables/<content key>.npy (once) and return its path: the key in
    the name pins the table's content, so a config that names the file pins the run's languages."""
    array = check_table(table)
    path = (cache_dir or default_cache_dir()) / "id-tables" / f"{_table_key(array)}.npy"
    if not path.is_file():
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        with atomic_write(path) as f:
            f.write(buffer.getvalue())
    return path


def load_table(path: str | Path, num_languages: int, vocab_size: int) -> tuple[torch.Tensor, int]:
    """A user-built table (languages.table) and the model vocabulary it needs (its largest id + 1).
    A file named by its content key (save_table) must still hold that content."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)  # never a pickle: a received config cannot run code
    except FileNotFoundError:
        raise XlingError(f"languages.table: {path} not found: write it again with xling.Config.with_id_table, "
                         "or copy it from the machine that trained the run") from None
    except (OSError, ValueError):  # (numpy's own message suggests allow_pickle, which xling never uses)
        raise XlingError(f"languages.table: {path} is not a .npy integer array: write it with "
                         "xling.Config.with_id_table") from None
    if not isinstance(array, np.ndarray):
        raise XlingError(f"languages.table: {path} is not a .npy integer array")
    array = check_table(array, num_languages, vocab_size)
    if re.fullmatch(r"[0-9a-f]{16}", path.stem) and _table_key(array) != path.stem:
        raise XlingError(f"languages.table: {path} no longer holds the table its name stands for: write it again "
                         "with xling.Config.with_id_table")
    return torch.from_numpy(array), int(array.max()) + 1


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
