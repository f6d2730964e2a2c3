"""`xling.Config` and `xling.corpus`: a run configuration from a dict, a YAML file or a packaged recipe, with
overrides; documents in memory as a corpus; a user-built language id table."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from .. import yamlio
from ..config import (
    CorpusConfig,
    EvalConfig,
    LanguagesConfig,
    ModelConfig,
    RunConfig,
    TokenizerConfig,
    TrainConfig,
    apply_overrides,
    as_written,
    flatten,
    from_dict,
    naming_the_file,
    read_config_file,
    to_dict,
    validate,
)
from ..errors import XlingError, a_kind
from ..fsio import UMASK, atomic_write_text, default_cache_dir, make_dirs
from ..notation import NAME_RULE, is_name
from .checks import check_arguments

ConfigSource = Union[None, str, os.PathLike, Mapping[str, Any], "Config", RunConfig]
SECTIONS = tuple(f.name for f in dataclasses.fields(RunConfig))  # name, corpus, tokenizer, ...


def corpus(documents: Iterable[str], *, valid: Iterable[str] | None = None, test: Iterable[str] | None = None,
           cache_dir: str | os.PathLike | None = None) -> dict:
    """A corpus section for documents held in memory: a list of strings, or any iterator of them.

    The documents are written once, one JSON object per line, to ``CACHE/documents/<content key>.jsonl``
    (CACHE is ``$XLING_CACHE`` or ``~/.cache/xling``), and the section returned points a ``jsonl``
    corpus at that file: ``{"name": "jsonl", "paths": [FILE], "text_field": "text"}``. The key is a
    hash of the documents, so the same documents always give the same file, the same tokenizer and
    token arrays (cached by content as for any corpus), and a config that names the file pins its text.
    An iterator is streamed to disk: it may be larger than memory.

    Documents are split 90/5/5 into train, valid and test by a hash of their text, so give a few hundred
    at least; or give your own held-out documents as `valid` and `test` (both), and `documents` are then
    the training text only. Use the result as a config's corpus (or as ``languages.second`` of a real pair):

        cfg = xling.Config("clone-90-10", corpus=xling.corpus(my_documents))

    `Config` does this by itself when ``corpus=`` (or ``languages={"second": ...}``) is a list or an
    iterator of strings.
    """
    check_arguments(cache_dir=(cache_dir, (str, os.PathLike, type(None))))
    if (valid is None) != (test is None):
        raise XlingError("corpus() takes valid and test together (your held-out documents) or neither (a 90/5/5 "
                         "split of the documents)")
    folder = Path(cache_dir or default_cache_dir()).absolute() / "documents"  # (a run reads it from anywhere)
    make_dirs(folder)
    section = {"name": "jsonl", "paths": [_written(documents, folder, "documents")], "text_field": "text"}
    if test is not None:
        section.update(valid=[_written(valid, folder, "valid")], test=[_written(test, folder, "test")])
        files = section["paths"] + section["valid"] + section["test"]  # one file per content
        if len(set(files)) < 3:
            raise XlingError("corpus() got the same documents for two of documents, valid and test: give each "
                             "split its own")
    return section


def _written(documents: Iterable[str], folder: Path, what: str) -> str:
    """The path of a JSONL file under `folder` named by its content, holding `documents` (written once)."""
    if isinstance(documents, (str, bytes, Mapping)) or not isinstance(documents, Iterable):  # (a dict: its keys)
        raise XlingError(f"corpus() takes {what} as a list or an iterator of strings, not "
                         f"{'one string' if isinstance(documents, (str, bytes)) else a_kind(documents)}")
    digest, count = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".documents.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for count, doc in enumerate(documents, 1):
                if not isinstance(doc, str):
                    raise XlingError(f"{what}[{count - 1}] is {a_kind(doc)}, not a string: give the "
                                     "documents' text")
                line = (json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(line)
                f.write(line)
        if not count:
            raise XlingError(f"corpus() got no {what}: give a list or an iterator of strings")
        path = folder / f"{digest.hexdigest()[:16]}.jsonl"
        if path.is_file():  # the same documents were written before
            os.unlink(tmp)
        else:
            with open(tmp, "r+b") as f:
                os.fsync(f.fileno())  # on disk before the rename makes it the corpus (as fsio.atomic_write)
            os.chmod(tmp, 0o666 & ~UMASK)  # what open() would have given it
            os.replace(tmp, path)  # complete or absent: a half-written file is never read
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return str(path)


def _is_documents(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))


def _is_dataclass(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _section(value: Any) -> Any:
    """A section given as a dataclass (a CorpusConfig, ...) or a corpus given as documents becomes a
    mapping; anything else stays as it is."""
    if _is_dataclass(value):
        return dataclasses.asdict(value)
    if _is_documents(value):
        return corpus(value)
    return value


def _with_corpora(data: dict) -> dict:
    """`data` with its corpus and languages.second, where given as documents or dataclasses, as mappings."""
    data = dict(data)
    if "corpus" in data:
        data["corpus"] = _section(data["corpus"])
    if isinstance(data.get("languages"), Mapping) and "second" in data["languages"]:
        data["languages"] = {**data["languages"], "second": _section(data["languages"]["second"])}
    return data


def _split(data: Mapping[str, Any]) -> tuple[dict, dict]:
    """A mapping as (nested sections, dotted keys): {"train.steps": 5} is an override."""
    nested = {k: v for k, v in data.items() if "." not in str(k)}
    return nested, {k: v for k, v in data.items() if "." in str(k)}


class Config:
    """A validated run configuration: everything that decides a run.

    Build one from a packaged recipe's name, a YAML file, a mapping or another config, then
    change it with overrides (dotted keys) and with whole sections as keyword arguments:

        cfg = xling.Config("clone-90-10")                             # a packaged recipe (`xling config --list`)
        cfg = xling.Config("my.yaml", {"train.steps": 200})           # a file, with dotted overrides
        cfg = xling.Config({"corpus": {"name": "text", "paths": ["books/"]}}, train={"steps": 200})
        cfg = xling.Config("clone-90-10", corpus=["a document", "another", ...])   # documents in memory

    Sections given as keywords update the keys they name (``train={"steps": 200}`` keeps the other
    training keys); dotted overrides are applied last. A list or an iterator of strings given as the
    corpus is written to the cache by `corpus`. Every key and value is checked as for `xling train`:
    a mistake is one `XlingError` that names the key (and the closest valid one).

    The sections are the typed dataclasses behind the YAML files (``cfg.train.steps``,
    ``cfg.languages.p``); they can be changed in place, and `train` checks the whole config again.
    `print(cfg)` shows it as YAML.
    """

    __slots__ = ("_cfg", "_recorded")

    def __init__(self, source: ConfigSource = None, overrides: Mapping[str, Any] | None = None, /,
                 **sections: Any) -> None:
        in_file: set[str] = set()  # the keys a YAML file gave (its values' errors name it)
        if isinstance(source, Config):
            data, dotted = as_written(source._cfg), {}  # (eval.window 0 still follows model.seq_len)
        elif isinstance(source, RunConfig):
            data, dotted = as_written(source), {}
        elif isinstance(source, Mapping):
            data, dotted = _split(source)
            data = copy.deepcopy(_with_corpora(data))
        elif isinstance(source, (str, os.PathLike)):
            data, dotted = (read_config_file(source) if str(source) else {}), {}
            in_file = set(flatten(data))
        elif source is None:
            data, dotted = {}, {}
        else:
            raise XlingError(f"a config comes from a recipe name, a YAML file, a mapping or a Config, "
                             f"not {a_kind(source)}")
        for key, value in sections.items():
            if key not in SECTIONS:
                raise XlingError(f"unknown config section '{key}': the sections are {', '.join(SECTIONS)}")
            whole = _is_dataclass(value) or (key == "corpus" and _is_documents(value))  # the section replaced
            value = _section(value) if whole else _with_corpora({key: value})[key]
            if isinstance(value, Mapping) and isinstance(data.get(key), dict) and not whole:
                data[key].update(copy.deepcopy(dict(value)))  # a section's keys: the others stay
            else:
                data[key] = copy.deepcopy(value)
        if not isinstance(overrides, Mapping | None):
            raise XlingError(f"overrides are a mapping of dotted keys, e.g. {{'train.steps': 100}}; got "
                             f"{a_kind(overrides)} {overrides!r:.60}")
        section = next((key for key in overrides or {} if key in SECTIONS and key != "name"), None)  # (name: a value)
        if section is not None:  # (applied as an override it would replace the whole section, dropping its other keys)
            raise XlingError(f"overrides are dotted keys (e.g. {{'train.steps': 100}}), not {section!r}: give a "
                             f"section's keys as {section}.KEY, or the section as a keyword ({section}={{...}})")
        given = flatten({key: dict(value) for key, value in sections.items() if isinstance(value, Mapping)})
        for key, value in dict(overrides or {}).items():  # one key two ways: which was meant? (as the CLI asks)
            for where, there in (("the source's", dotted), ("a section's", given)):
                if key in there and there[key] != value:
                    raise XlingError(f"{key} given twice ({where} {there[key]!r} and the overrides' {value!r}): give it "
                                     "once")
        data = apply_overrides(data, {**dotted, **dict(overrides or {})})
        cfg = from_dict(data)
        # a run's own config (Run.config, a resume) may predate the refusal of keys a run ignores
        self._recorded = isinstance(source, RunConfig) or (isinstance(source, Config) and source._recorded)
        with naming_the_file(source if in_file else None, in_file - set(overrides or {}) - set(given)):
            validate(cfg, recorded=self._recorded)
        self._cfg = cfg
        _ = self.language_names  # the per-language keys (mix, transforms) name languages of the run, as training checks

    # ------------------------------------------------------------------ the sections
    @property
    def name(self) -> str:
        """The run's display name (the default run directory is runs/NAME); not part of its identity."""
        return self._cfg.name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str) or (value and not is_name(value)):
            raise XlingError(f"name: {value!r} is not a usable name: {NAME_RULE}")
        self._cfg.name = value

    @property
    def corpus(self) -> CorpusConfig:
        """Where the base language's text comes from."""
        return self._cfg.corpus

    @property
    def tokenizer(self) -> TokenizerConfig:
        """How text becomes ids (one tokenizer per corpus)."""
        return self._cfg.tokenizer

    @property
    def languages(self) -> LanguagesConfig:
        """Which languages, and how often each is trained."""
        return self._cfg.languages

    @property
    def model(self) -> ModelConfig:
        """The GPT's shape: a preset, any field overridden."""
        return self._cfg.model

    @property
    def train(self) -> TrainConfig:
        """Optimisation, logging and checkpoints."""
        return self._cfg.train

    @property
    def eval(self) -> EvalConfig:
        """The evaluation protocol: windows, and which of their tokens are scored."""
        return self._cfg.eval

    @property
    def language_names(self) -> list[str]:
        """The languages' names, e.g. ["EN1", "EN2"] or ["EN", "FR"] (languages.names where given); checks
        that the corpora's translations exist and that languages.mix and languages.transforms name languages
        of the run (what training checks first)."""
        from ..data.mixture import Mixture

        return list(Mixture.of(self._cfg).names)

    def documents(self, split: str = "test") -> dict[str, list[str]]:
        """Each language's documents of a split, as text: held-out text ("test", "valid") for evaluations
        outside xling, e.g. an lm-evaluation-harness task of an export (examples/lm_eval_task.py).

        Documents are the Bible's chapters of the split's books (the split "probe" is Luke and Acts, in no run's
        splits) or your corpus's documents, split as training splits them. Clones share their base language's text (they
        differ in ids only), and a language with word-order transforms is reordered after tokenising, so
        this is the text as written: an export of such a language reads what its tokenizer makes of it.
        """
        from ..data.corpora import SPLITS, check_split_name, language_corpora, load_documents

        check_split_name(split, SPLITS + ("probe",) * (self._cfg.corpus.name == "bible"))
        names, corpora = self.language_names, language_corpora(self._cfg)
        texts = [load_documents(corpus, split) for corpus in corpora]
        source = [0] * len(names) if self._cfg.languages.kind == "clone" else range(len(names))  # as training reads
        return {name: list(texts[i]) for name, i in zip(names, source)}

    # ------------------------------------------------------------------ copies and views
    def replace(self, overrides: Mapping[str, Any] | None = None, /, **sections: Any) -> Config:
        """A new config: this one with `overrides` (dotted keys) and `sections` applied, as in `Config`."""
        return Config(self, overrides, **sections)

    def with_id_table(self, table: Any, *, names: Sequence[str] | None = None) -> Config:
        """A new config whose languages are given by a user-built id table (custom language transforms).

        Every language reads the base corpus; row ``l`` of the table maps each base id (the tokenizer's id,
        ``0 .. V - 1``; V is ``tokenizer.vocab_size``, or the size of the tokenizer ``tokenizer.path``
        brings) to the model id language ``l`` uses for it. Row 0 is usually the identity (the base
        language). Give an integer array of shape [languages, V], or one entry per language, each an
        array of V model ids or a function from the base ids (``numpy.arange(V)``) to them:

            V = cfg.tokenizer.vocab_size
            shared_bytes = lambda ids: numpy.where(ids < 259, ids, ids + V)   # EN2: bytes are anchors
            cfg = cfg.with_id_table([lambda ids: ids, shared_bytes], names=["EN", "EN-b"])

        Model ids must be below V x languages; the model's vocabulary is the largest id + 1. The table
        is written once to ``CACHE/id-tables/<content key>.npy`` (never a pickle), and the config's
        ``languages.table`` names that file: kind clone, one clone per extra row, ``p`` and schedules
        mix them as usual. A run keeps its own copy of the table (RUN_DIR/tokenizers/), so it is
        resumed, evaluated and analysed like any other, also where the file is gone.
        """
        import numpy as np

        from ..data.languages import check_table, save_table

        if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
            raise XlingError(f"names must be a list of names, one per row of the table (e.g. ['EN', 'EN-b']), "
                             f"got {names!r}")
        lang = self._cfg.languages
        if lang.kind == "real" or lang.corpora:
            raise XlingError("with_id_table makes every language from the base corpus (clones of it, as the table "
                             "says); this config has real languages (languages.kind real / languages.corpora): "
                             "start from a clone config, e.g. Config('clone-90-10')")
        tok = self._cfg.tokenizer
        if tok.path:  # a tokenizer you bring: its own size
            from ..data.brought import load_brought

            vocab = load_brought(tok.path).vocab_size
        else:
            vocab = tok.vocab_size
        if isinstance(table, (list, tuple)):  # one entry per language
            rows = [row(np.arange(vocab)) if callable(row) else row for row in table]
            try:
                table = np.stack([np.asarray(row) for row in rows])
            except ValueError as exc:
                raise XlingError(f"the rows of an id table must each hold {vocab} model ids ({exc})") from None
        array = check_table(table, vocab_size=vocab)
        if len(array) < 2:
            raise XlingError("an id table needs a row per language: at least two")
        path = save_table(array)
        overrides: dict[str, Any] = {"languages.kind": "clone", "languages.num_clones": len(array) - 1,
                                     "languages.frac_clone": 1.0, "languages.table": str(path)}
        overrides["languages.names"] = list(names) if names is not None else []
        return self.replace(overrides)

    def to_dict(self) -> dict:
        """The config as nested plain data (what the YAML file holds; eval.window and last_n 0 follow
        model.seq_len, as a run resolves them)."""
        return as_written(self._cfg)

    def to_yaml(self) -> str:
        """The config as YAML text (`xling config` prints this)."""
        return yamlio.dump(self.to_dict())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config as a YAML file (to train from it with `xling train FILE`)."""
        atomic_write_text(Path(path), self.to_yaml())
        return Path(path)

    def validate(self) -> Config:
        """Check the config again after changing its sections in place; returns it."""
        validate(self._cfg, recorded=self._recorded)
        _ = self.language_names
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and to_dict(self._cfg) == to_dict(other._cfg)  # the same run

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        defaults = flatten(as_written(RunConfig()))
        changed = {k: v for k, v in flatten(self.to_dict()).items() if defaults.get(k) != v}
        return f"Config({changed!r})"

    def __str__(self) -> str:
        return self.to_yaml()


def unwrap(config: Config | ConfigSource) -> RunConfig:
    """The validated RunConfig behind a Config (or anything `Config` accepts). Internal."""
    config = config if isinstance(config, Config) else Config(config)
    validate(config._cfg, recorded=config._recorded)
    return config._cfg
