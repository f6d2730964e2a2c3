"""A run's data, prepared ahead of training: its tokenizers and every split's token arrays.

`xling prepare CONFIG` calls `prepare`; training prepares the same way on first use (the first
token array it asks for builds all the missing splits of that corpus in one pass), so running
`prepare` first only moves the work. Both read each corpus as a stream, in parallel workers.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import CorpusConfig, RunConfig
from ..errors import XlingError
from ..fsio import default_cache_dir, read_json, remove_stale_temporaries
from .brought import load_brought
from .corpora import corpus_splits, held_out_parts, language_corpora
from .heldout import warn_if_out_of_order
from .parallel import Workers, workers_of
from .sources import digest_files
from .token_arrays import build_token_arrays, missing_splits, token_array_paths
from .tokenizer import Tokenizer, VocabularyTooLarge, get_tokenizer, smallest_vocab_size


def source_tokenizers(cfg: RunConfig, cache_dir: Path | None = None, workers: int | Workers | None = None,
                      progress: bool | None = None) -> tuple[list[CorpusConfig], list[Tokenizer]]:
    """The text sources of a run and the tokenizer of each: clones share the base corpus (one
    source); real languages have a source each, with one joint tokenizer (the per-language vocabulary
    times the languages, so the model's vocabulary matches the disjoint setting) or one tokenizer each.
    A tokenizer the config brings (tokenizer.path, tokenizer.second_path) is read from its file, never trained."""
    lang, tok = cfg.languages, cfg.tokenizer
    options = {"cache_dir": cache_dir, "workers": workers, "progress": progress}
    corpora = language_corpora(cfg)

    def own(corpora: list[CorpusConfig], vocab: int, path: str, key: str) -> Tokenizer:
        return load_brought(path, key) if path else get_tokenizer(corpora, vocab, **options)

    if lang.kind != "clone" and lang.vocab == "joint":
        n = len(corpora)
        try:
            joint = own(corpora, n * tok.vocab_size, tok.path, "tokenizer.path")
        except VocabularyTooLarge as exc:
            if exc.limit // n < smallest_vocab_size():
                raise XlingError(f"these corpora are too small for a joint tokenizer: it has {n} x tokenizer.vocab_size "
                                 f"pieces, at least {n} x {smallest_vocab_size()}, and they have at most {exc.limit}: "
                                 "give more text") from None
            raise XlingError(f"tokenizer.vocab_size {tok.vocab_size} is too large for these corpora: the joint "
                             f"tokenizer has {n} x {tok.vocab_size} pieces, at most {exc.limit}; lower "
                             f"tokenizer.vocab_size to at most {exc.limit // n}") from None
        return corpora, [joint] * n
    paths = [(tok.path, "tokenizer.path"), (tok.second_path, "tokenizer.second_path")] + [("", "")] * len(corpora)
    return corpora, [own([corpus], tok.vocab_size, *path) for corpus, path in zip(corpora, paths)]


def prepare(cfg: RunConfig, cache_dir: Path | None = None, workers: int | None = None,
            progress: bool | None = None) -> list[dict]:
    """Train (or find) the run's tokenizers and encode (or verify) every split of its corpora.

    One row per source and split: the corpus, tokenizer, split, documents, tokens, the array's path
    and whether it was built now ("sources": every source that reads this same entry).
    """
    start = time.perf_counter()
    remove_stale_temporaries(Path(cache_dir or default_cache_dir()))  # what killed preparations left half-written
    rows, done, built = [], set(), {}
    with workers_of(workers) as pool:  # one set of worker processes for every pass
        digest_files([part for corpus in language_corpora(cfg) for _, part in held_out_parts(corpus)], pool)
        corpora, tokenizers = source_tokenizers(cfg, cache_dir, pool, progress)
        warn_if_out_of_order(cfg, corpora)
        for corpus, tokenizer in zip(corpora, tokenizers):
            if (repr(corpus), tokenizer.sha256) not in built:
                missing = missing_splits(corpus, tokenizer, cache_dir, verify=True)
                if missing:
                    build_token_arrays(corpus, missing, tokenizer, cache_dir, pool, progress)
                built[repr(corpus), tokenizer.sha256] = missing
    sharing: dict[tuple, list[int]] = {}  # the same corpus with one tokenizer (a pair of one translation): one entry
    for source, (corpus, tokenizer) in enumerate(zip(corpora, tokenizers)):
        sharing.setdefault((repr(corpus), tokenizer.sha256), []).append(source)
    for source, (corpus, tokenizer) in enumerate(zip(corpora, tokenizers)):
        key = (repr(corpus), tokenizer.sha256)
        if key in done:
            continue
        done.add(key)
        for split in corpus_splits(corpus):
            bin_path, manifest_path = token_array_paths(corpus, split, tokenizer, cache_dir)
            manifest = read_json(manifest_path)
            rows.append({"source": source, "sources": sharing[key], "corpus": corpus, "tokenizer": tokenizer.path,
                         "tokenizer_sha256": tokenizer.sha256, "split": split,
                         "documents": manifest["n_documents"], "tokens": manifest["n_tokens"], "path": bin_path,
                         "built": split in built[key]})
    for row in rows:
        row["seconds"] = time.perf_counter() - start
    return rows
