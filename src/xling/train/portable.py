"""A run's own copy of its languages, so that a run directory works anywhere.

Training writes, at its start, the tokenizer file of every text source and the language id table
into the run directory, and their SHA-256 into run.json:

    RUN_DIR/tokenizers/
      0.model or 0.json       source 0's tokenizer (SentencePiece model, or Hugging Face tokenizer.json)
      1.model or 1.json       a real pair's second language (a joint vocabulary: both sources name 0)
      languages.safetensors   the id table [languages, V]: base id -> model id
    run.json  "saved_languages": {"tokenizers": [{"file", "sha256", "trained"}, ...],
                                  "table": {"file", "sha256"}, "model_vocab": N}

`xling eval`, `sample`, `align` and `transfer` (and `--resume`) then read these copies, checked
against their hashes, instead of the cache: a copied run directory needs neither the cache nor the
text its tokenizers were trained on; evaluating it encodes only the split it scores. Runs written
before this existed have no copies and load as before (tokenizers from the cache or trained again).
A copy that no longer matches its hash is reported, and the tokenizers the config gives are used
only when they are exactly the ones the run recorded.
"""

from __future__ import annotations

import hashlib
import logging
import re

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from ..config import RunConfig
from ..data.brought import tokenizer_from_bytes
from ..data.stream import LanguageSetup, prepare_languages
from ..errors import XlingError
from ..fsio import atomic_write
from .rundir import RunDir

RECORD = "saved_languages"
FOLDER = "tokenizers"
TABLE_FILE = f"{FOLDER}/languages.safetensors"
log = logging.getLogger(__name__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def table_bytes(table: torch.Tensor) -> bytes:
    """The id table as safetensors bytes (the same bytes for the same table)."""
    return safetensors_bytes({"table": table.to(torch.int64).contiguous()})


def save_languages(run: RunDir, setup: LanguageSetup) -> dict:
    """Write the run's tokenizer files and id table into RUN_DIR/tokenizers/ (atomically); the record
    for run.json (written after them, so a record always names complete files)."""
    files, entries = {}, []
    first_source = {}
    for source, tokenizer in enumerate(setup.tokenizers):
        index = first_source.setdefault(tokenizer.sha256, source)  # a joint tokenizer is written once
        name = f"{FOLDER}/{index}{tokenizer.suffix}"
        files[name] = tokenizer.model_bytes
        entries.append({"file": name, "sha256": tokenizer.sha256, "trained": bool(tokenizer.words)})
    files[TABLE_FILE] = table_bytes(setup.table)
    for name, data in files.items():
        with atomic_write(run.path / name) as f:
            f.write(data)
    return {"tokenizers": entries, "table": {"file": TABLE_FILE, "sha256": _sha256(files[TABLE_FILE])},
            "model_vocab": setup.model_vocab}


def _read(run: RunDir, entry: dict) -> bytes:
    """A recorded file's bytes, or an XlingError saying what is wrong with it."""
    # the run's own copies only: FOLDER/NAME, as written above (an absolute path or .. would read any file)
    file = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(file, str) or not re.fullmatch(rf"{FOLDER}/[\w.-]+", file) or ".." in file:
        raise XlingError(f"{run.info_path}: a malformed {RECORD} entry")
    path = run.path / file
    if not path.is_file():
        raise XlingError(f"{path} is missing")
    data = path.read_bytes()
    if _sha256(data) != entry.get("sha256"):
        raise XlingError(f"{path} does not match its sha256 in run.json (damaged or replaced)")
    return data


def read_saved(run: RunDir, record: dict) -> dict:
    """The run's own tokenizers and table, checked against their hashes (an XlingError if one is not
    right), as prepare_languages takes them."""
    tokenizers = []
    for entry in record.get("tokenizers") or []:
        data = _read(run, entry)
        try:
            tokenizers.append(tokenizer_from_bytes(data, run.path / entry["file"], words=bool(entry.get("trained"))))
        except XlingError:
            raise
        except Exception:
            raise XlingError(f"{run.path / entry['file']} is not a tokenizer xling can read") from None
    try:
        table = safetensors_load(_read(run, record.get("table")))["table"]
    except XlingError:
        raise
    except Exception:  # not safetensors, or no table in it
        raise XlingError(f"{run.path / TABLE_FILE} is not an id table xling wrote") from None
    if not tokenizers or not isinstance(record.get("model_vocab"), int) or isinstance(record["model_vocab"], bool):
        raise XlingError(f"{run.info_path}: a malformed {RECORD} entry")
    return {"tokenizers": tokenizers, "table": table, "model_vocab": record["model_vocab"], "run": str(run.path)}


def run_languages(run: RunDir, cfg: RunConfig, cache_dir=None, session: bool = True) -> LanguageSetup:
    """A trained run's languages: its own copies where it has them, else (runs from before copies
    existed, or a damaged copy) those the config gives, which must then be the ones it recorded.
    `session` (evaluation, sampling, analyses): a split is encoded alone when needed."""
    record = run.read_info(tolerant=True).get(RECORD)
    if isinstance(record, dict) and not (isinstance(record.get("tokenizers"), list) and isinstance(record.get("table"), dict)
                                         and all(isinstance(entry, dict) for entry in record["tokenizers"])):
        raise XlingError(f"{run.info_path}: a malformed {RECORD} entry (its tokenizers a list of files, its table a "
                         "file): restore run.json from a copy of the run")
    if isinstance(record, dict):
        try:
            setup = prepare_languages(cfg, cache_dir, read_saved(run, record))
            if not session:
                setup.run = None
            return setup
        except XlingError as exc:
            log.warning(f"{exc}; using the tokenizers the config gives, if they are the run's")
    setup = prepare_languages(cfg, cache_dir)
    if isinstance(record, dict):
        recorded = [entry.get("sha256") for entry in record.get("tokenizers") or []]
        if [t.sha256 for t in setup.tokenizers] != recorded \
                or _sha256(table_bytes(setup.table)) != (record.get("table") or {}).get("sha256"):
            raise XlingError(f"the tokenizers or id table of {run.path} (in {run.path / FOLDER}) are damaged, and those "
                             "its config gives now are not the ones it was trained with: restore that folder "
                             "from a copy of the run")
    return setup
