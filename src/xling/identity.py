"""When two configs make the same run (what may change when a run is resumed), and where a run's
relative paths point when it is read from another working directory."""

from __future__ import annotations

import dataclasses
import os

from .config import CorpusConfig, RunConfig, flatten, from_dict, to_dict
from .notation import dataset_split


def resolve_relative(cfg: RunConfig, workdir: str | None) -> RunConfig:
    """The config with each relative local path (corpora, tokenizers, an id table) that does not exist
    from here but does from `workdir` (where the run trained: run.json's workdir) made absolute there,
    so a run is evaluated or exported from any directory. config.yaml keeps the paths as written, so a
    project moved as a whole still resumes. A file path found in neither place is given as `workdir` makes
    it, so that an error names where the run read it; `~` paths and Hugging Face dataset names stay as written."""
    def located(p: str, name: bool = False) -> str:  # name: a dataset's NAME[:CONFIG] or FOLDER, maybe @SPLIT
        spec, split = dataset_split(p) if name else (p, "")
        expanded = os.path.expanduser(spec)
        if not p or os.path.isabs(expanded) or os.path.exists(expanded) or not workdir:
            return p
        there = os.path.join(workdir, spec)
        return there + (f"@{split}" if split else "") if os.path.exists(there) or not name else p

    def corpus(c: CorpusConfig) -> CorpusConfig:
        hf = c.name == "hf"
        return dataclasses.replace(c, paths=[located(p, hf) for p in c.paths], valid=[located(p, hf) for p in c.valid],
                                   test=[located(p, hf) for p in c.test])

    lang, tok = cfg.languages, cfg.tokenizer
    return dataclasses.replace(
        cfg, corpus=corpus(cfg.corpus),
        tokenizer=dataclasses.replace(tok, path=located(tok.path), second_path=located(tok.second_path)),
        languages=dataclasses.replace(lang, second=corpus(lang.second), table=located(lang.table),
                                      corpora=lang.corpora if cfg.corpus.name == "bible" else
                                      [located(p, cfg.corpus.name == "hf") for p in lang.corpora]))


# How a run is executed and logged: neither what it learns nor the numbers it reports (beyond the last bits).
EXECUTION_KEYS = ("name", "train.device", "train.compile", "train.log_every", "train.eval_every",
                  "train.checkpoint_every", "train.keep_checkpoints", "eval.batch_size")
# What may change when a run is resumed: how it runs, logs and is evaluated, not what it learns from.
RESUMABLE_KEYS = (*EXECUTION_KEYS, "eval.window", "eval.last_n", "eval.max_tokens")
# Where a trained run's text and tokenizers are found: edited when the run, or its data, moves to another machine
# (languages.corpora too, where it lists files rather than Bible translations). Reading the run (eval, export) allows
# it; a resume does not (it trains on that text).
LOCATION_KEYS = ("corpus.paths", "corpus.valid", "corpus.test", "languages.second.paths", "languages.second.valid",
                 "languages.second.test", "tokenizer.path", "tokenizer.second_path", "languages.table")


def config_differences(a: RunConfig, b: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs, either one's keys (those in `ignore` aside): a key only
    one has (a language's transforms added) differs too."""
    fa, fb = flatten(to_dict(a)), flatten(to_dict(b))
    return [k for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k) and k not in ignore]


def run_identity(config: dict) -> dict:
    """What makes two runs the same run (a study reuses a twin's results): the resolved config, its
    display name aside."""
    return {k: v for k, v in to_dict(from_dict(config)).items() if k != "name"}
