"""When two configs make the same run: what may change when a run is resumed, and paths compared
as a run records them (absolute)."""

from __future__ import annotations

import dataclasses
import os

from .config import CorpusConfig, RunConfig, flatten, from_dict, to_dict


def with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """The config with its relative local paths (corpora, tokenizers, an id table) made absolute against
    the working directory, as a run records them: its evaluation and resume then work from any
    directory. A path that does not exist here (a Hugging Face dataset's name) stays as it is."""
    def absolute(p: str) -> str:
        return os.path.abspath(p) if p and not os.path.isabs(p) and os.path.exists(p) else p

    def corpus(c: CorpusConfig) -> CorpusConfig:
        return dataclasses.replace(c, paths=[absolute(p) for p in c.paths])

    lang, tok = cfg.languages, cfg.tokenizer
    return dataclasses.replace(
        cfg, corpus=corpus(cfg.corpus),
        tokenizer=dataclasses.replace(tok, path=absolute(tok.path), second_path=absolute(tok.second_path)),
        languages=dataclasses.replace(lang, second=corpus(lang.second), table=absolute(lang.table)))


# What may change when a run is resumed: how it runs, logs and is evaluated, not what it learns from.
RESUMABLE_KEYS = ("name", "train.device", "train.compile", "train.log_every", "train.eval_every",
                  "train.checkpoint_every", "train.keep_checkpoints", "eval.window", "eval.last_n", "eval.max_tokens",
                  "eval.batch_size")


def config_differences(a: RunConfig, b: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (those in `ignore` aside). Relative paths are
    compared made absolute (`with_absolute_paths`): a run records them so, and runs recorded earlier did not."""
    fa, fb = flatten(to_dict(with_absolute_paths(a))), flatten(to_dict(with_absolute_paths(b)))
    return [k for k in fa if fa[k] != fb.get(k) and k not in ignore]


def run_identity(config: dict) -> dict:
    """What makes two runs the same run (a study reuses a twin's results): the resolved config with its
    paths absolute, its display name aside."""
    return {k: v for k, v in to_dict(with_absolute_paths(from_dict(config))).items() if k != "name"}
