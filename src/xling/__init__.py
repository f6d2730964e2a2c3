"""xling: controlled experiments on cross-lingual generalisation in language models.

The public API is what this module lists (``xling.__all__``); the ``xling`` command is a thin layer
over exactly these calls. A notebook needs nothing else:

    import xling

    cfg = xling.Config("clone-90-10", {"train.steps": 200})    # a packaged recipe, a YAML file or a dict
    run = xling.train(cfg, "runs/demo")                         # train + validate + test -> a Run
    run.evaluation()                                            # {"EN1": {"ppl": ...}, "EN2": {...}}
    run.metrics(frame=True)                                     # the training curve (pandas, if installed)
    run.sample("EN2", prompt="In the beginning")
    run.align()                                                 # hidden-state, gradient, embedding alignment
    run.transfer()                                              # fine-tune in EN1, zero-shot in EN2
    run.model()                                                 # the torch module

    study = xling.Study("headline-cpu")                         # the paper's experiments, or your own YAML
    study.run(workers=2)                                        # (in a script: under if __name__ == "__main__":)
    study.results(frame=True)                                   # ppl and TEff per run and language
    study.report()                                              # reports/headline-cpu/report.md + .html

    xling.teff(mono_rows, run_rows, form="both")                # TEff from perplexities you measured
    xling.Store().evaluations(frame=True)                       # every study's evaluations (the results store)

- `Config`: a run configuration, from a packaged recipe, a YAML file or a mapping, with overrides; its
  corpus may be documents held in memory (`corpus`), its languages a table you build
  (`Config.with_id_table`).
- `train`: train a run into a directory; returns a `Run`.
- `Run`: a run directory: config, status, metrics, evaluation, sampling, alignment, transfer, the model.
- `Study`: a grid of runs: run what is missing, status, results as rows, the report.
- `Store`: the results store of a root's runs, across studies, read as rows (and any SQL).
- `teff`: MLPE, MLTE and token efficiency from perplexities (a `TEffTable`).
- `XlingError`: every problem with your input (a config value, a file, a run directory) is one of these,
  with a message that says what to change.

Examples that run as they are (and in the test suite, on tiny settings) are in the repository's
``examples/`` folder. Everything else (``xling.config``, ``xling.data``, ``xling.model``, ``xling.train``,
``xling.analysis``, ``xling.study``, ``xling.report``, ``xling.cli``) is internal: it may change in any
release. Importing ``xling`` loads none of it (nor PyTorch) until an attribute above is first used.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.2.0"

__all__ = ["Config", "Run", "Store", "Study", "TEffTable", "XlingError", "corpus", "teff", "train"]

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load on first use
    from .api import Config, Run, Store, Study, TEffTable, XlingError, corpus, teff, train


def __getattr__(name: str):
    """The public names load on first use, so `import xling` stays light."""
    if name in __all__:
        from . import api

        value = getattr(api, name)
        globals()[name] = value  # once loaded, an ordinary attribute
        return value
    raise AttributeError(f"module 'xling' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (loaded or not) and the module's dunders; not the helpers it imports (sys, types)."""
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__")})


class _Package(types.ModuleType):
    """xling itself. `xling.train` is the public function, and also the name of an internal subpackage:
    the import system records a loaded subpackage as an attribute of its parent, and here that one
    record is left out, so `xling.train` stays the function (the subpackage is `sys.modules["xling.train"]`,
    imported by its full name, e.g. `from xling.train import trainer`)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
