"""Hugging Face datasets as corpora: loaded offline from a save_to_disk folder or the local cache (one split of a
DatasetDict with @SPLIT), fingerprinted by their Arrow files, read as chunks of their text column.

datasets and pyarrow are optional: they are imported only when such a corpus is used.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import CorpusConfig
from ..errors import XlingError
from ..notation import dataset_split
from .sources import Chunk, arrow_chunks, file_digest, first_of_each, optional_module, reading, string_column


@contextmanager
def _offline():
    """No network while a Hugging Face dataset loads: only what is on disk or in the local cache
    (the environment variables for a first import, the flags themselves if already imported)."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(dict.fromkeys(names, "1"))
    flags = [(m, name) for m in (importlib.import_module("datasets.config"),
                                 importlib.import_module("huggingface_hub.constants"))
             for name in names if hasattr(m, name)]
    before = [getattr(m, name) for m, name in flags]
    for m, name in flags:
        setattr(m, name, True)
    try:
        yield
    finally:
        for (m, name), value in zip(flags, before):
            setattr(m, name, value)
        for k, value in saved.items():
            if value is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = value


_DATASETS: dict[str, list] = {}


def _dataset_of(spec: str) -> tuple[str, str]:
    """(the dataset, however its folder is written; the split asked for, or "" for all)."""
    source, split = dataset_split(spec)
    folder = Path(source).expanduser()
    return (str(folder.resolve()) if folder.is_dir() else source), split


def check_hf_held_out(paths: dict[str, list[str]]) -> None:
    """Refuse training text that holds a held-out split: a whole DatasetDict in paths (every split, its test too)
    beside one of its splits in valid or test, or one split in two places."""
    held = {_dataset_of(spec): split for split in ("valid", "test") for spec in paths[split]}
    for split, specs in paths.items():
        for spec in specs:
            dataset, part = _dataset_of(spec)
            for (other, other_part), other_split in held.items():
                if other == dataset and split != other_split and (not part or part == other_part):
                    raise XlingError(f"corpus.{'paths' if split == 'train' else split} entry {spec} holds the "
                                     f"{other_split} split ({other}@{other_part}): name one split of it (@train)")


def hf_datasets(spec: str) -> list:
    """The datasets.Dataset objects of one corpus entry: a folder written by save_to_disk, or NAME[:CONFIG] of a
    dataset in the local Hugging Face cache (never downloaded). A DatasetDict gives all its splits, in order, or
    with @SPLIT (wikitext:wikitext-103-raw-v1@test) that one: a benchmark's own split for corpus.valid / .test."""
    if spec in _DATASETS:
        return _DATASETS[spec]
    datasets = optional_module("datasets", "datasets", "Hugging Face datasets")
    source, split = dataset_split(spec)
    path = Path(source).expanduser()
    try:
        with _offline():
            if path.is_dir():
                loaded = datasets.load_from_disk(str(path))
            else:
                name, _, config = source.partition(":")
                loaded = datasets.load_dataset(name, config or None)
    except Exception as exc:  # datasets raises many kinds (FileNotFoundError, ConnectionError, ValueError, ...)
        if path.is_dir() and _saved_without_data(path):  # datasets cannot load an empty save (an IndexError)
            raise XlingError(f"the Hugging Face dataset at {spec} has no rows: add documents") from None
        message = " ".join(str(exc).split())[:160] or exc.__class__.__name__
        hint = ("a folder written by save_to_disk" if path.is_dir() else
                "a save_to_disk folder, or NAME[:CONFIG] of a dataset already in the local Hugging Face cache")
        raise XlingError(f"cannot load the Hugging Face dataset '{spec}' ({message}): the entries of corpus hf "
                         f"(paths, valid, test) are {hint}, each maybe with @SPLIT") from None
    if split and not isinstance(loaded, dict):
        raise XlingError(f"the Hugging Face dataset '{source}' is a single split: leave out @{split}")
    if split and split not in loaded:
        raise XlingError(f"the Hugging Face dataset '{source}' has no split '{split}': it has {', '.join(loaded)}")
    loaded = loaded[split] if split else loaded
    _DATASETS[spec] = list(loaded.values()) if isinstance(loaded, dict) else [loaded]
    return _DATASETS[spec]


def _saved_without_data(path: Path) -> bool:
    """A save_to_disk folder (or one of a DatasetDict's splits) whose state lists no data file: an empty dataset."""
    states = [path / "state.json"] if (path / "state.json").is_file() else sorted(path.glob("*/state.json"))
    try:
        return bool(states) and any(not json.loads(s.read_text(encoding="utf-8")).get("_data_files") for s in states)
    except (OSError, ValueError):
        return False


def _dataset_files(ds) -> list[Path]:
    return [Path(f["filename"]) for f in ds.cache_files]


def hf_digests(spec: str) -> list[str]:
    """sha256 of every Arrow file of a Hugging Face dataset entry (its content, wherever it lives)."""
    out = []
    for ds in hf_datasets(spec):
        files = _dataset_files(ds)
        if not files:
            raise XlingError(f"the Hugging Face dataset '{spec}' lives only in memory: save it with "
                             "save_to_disk and put that folder in corpus.paths")
        out.append([file_digest(f) for f in files])
    return out


def hf_chunks(corpus: CorpusConfig) -> Iterator[Chunk]:
    """The text column of a Hugging Face corpus, in order, a chunk at a time."""
    pa = optional_module("pyarrow", "pyarrow", "Hugging Face datasets")
    if not corpus.paths:
        raise XlingError("corpus 'hf' has no paths: set corpus.paths to save_to_disk folders or dataset names")
    text_bytes = lambda rows, column: column.nbytes
    for spec in first_of_each(corpus.paths, _dataset_of):
        for ds in hf_datasets(spec):
            string_column(ds.data.schema, corpus.text_field, f"the Hugging Face dataset '{spec}'")
            files = _dataset_files(ds)
            if getattr(ds, "_indices", None) is not None or not files:  # a selection of rows: read via datasets
                yield from arrow_chunks(ds.with_format("arrow").iter(batch_size=8192), corpus.text_field, spec,
                                         text_bytes)
                continue
            for f in files:  # the Arrow files themselves, read batch by batch (not memory-mapped)
                with reading(f, "Arrow file"), pa.OSFile(str(f)) as source:
                    yield from arrow_chunks(pa.ipc.open_stream(source), corpus.text_field, spec, text_bytes)


def hf_input_size(corpus: CorpusConfig) -> int:
    """The text column's bytes (as hf_chunks count them), from the Arrow metadata."""
    return sum(ds.data.column(corpus.text_field).nbytes for spec in first_of_each(corpus.paths, _dataset_of) for ds in hf_datasets(spec)
               if corpus.text_field in ds.column_names)
