"""A mixture of your own: documents from memory, languages from an id table you build.

The corpus is any list or iterator of strings: here the docstrings of Python's own standard library
(read with `ast`, so the example needs nothing but Python). Three languages share one model, each a
row of an id table that maps the tokenizer's ids (base ids) to the model's:

- EN: the text as tokenized (the identity);
- EN-b: a clone that shares the byte pieces with EN (ids below 259: pad, unk, end-of-document and the
  256 byte-fallback pieces of xling's tokenizers), every other piece its own: anchors of your choosing;
- EN-c: a clone in which every id is its own, like the paper's.

The mixture is a schedule: the two clones get 10 % of the training sequences in the first half of
training and 50 % in the second (split evenly between them). The script trains, prints each
language's test perplexity and a sample, and how aligned EN's hidden states are with each clone's.

    python examples/custom_mixture.py     # under a minute on 2 CPU cores
"""

import ast
import itertools
import sysconfig
from pathlib import Path

import numpy as np

import xling

SETTINGS = {"tokenizer": {"vocab_size": 2048}, "model": {"preset": "cpu-xs"},
            "train": {"steps": 300, "batch_size": 16, "lr": 0.005, "warmup": 20}, "eval": {"max_tokens": 20000}}


def standard_library_docstrings():
    """The longer docstrings of the standard library's modules, classes and functions, one at a time."""
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if {"site-packages", "test", "tests", "idlelib"} & set(path.parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 150:
                    yield doc


def main(documents=None, settings=SETTINGS, out="runs/example-custom-mixture", probes=200):
    documents = itertools.islice(standard_library_docstrings(), 4000) if documents is None else documents
    cfg = xling.Config(settings, corpus=documents, languages={"schedule": "0.1_0.5"})  # written to the cache once
    V = cfg.tokenizer.vocab_size
    cfg = cfg.with_id_table([lambda ids: ids,                               # EN
                             lambda ids: np.where(ids < 259, ids, ids + V),  # EN-b: bytes shared
                             lambda ids: ids + 2 * V],                       # EN-c: nothing shared
                            names=["EN", "EN-b", "EN-c"])
    run = xling.train(cfg, out, resume=True, progress=False)
    for language, result in run.evaluation().items():
        print(f"{language:<5} test perplexity {result['ppl']:7.1f}")
    print("EN-b:", run.sample("EN-b", prompt="Return the", tokens=20, seed=1))
    for other in ("EN-b", "EN-c"):
        hidden = run.align(["EN", other], sequences=probes, grad_sequences=0, figures=False)["hidden"]
        print(f"EN ~ {other}: mean hidden-state cosine {hidden['mean']:+.3f} "
              f"(unrelated text: {np.mean(hidden['shuffled_baseline']):+.3f})")
    return run


if __name__ == "__main__":
    main()
