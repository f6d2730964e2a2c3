"""The public API, re-exported at the top level as `xling.Config`, `xling.train`, ... (see `xling`).

Its modules import nothing heavy (PyTorch, SciPy) until a function needs it.
"""

from ..errors import XlingError
from .configs import Config, corpus
from .runs import Run, train
from .scores import TEffTable, teff
from .store import Store
from .studies import Study

__all__ = ["Config", "Run", "Store", "Study", "TEffTable", "XlingError", "corpus", "teff", "train"]
