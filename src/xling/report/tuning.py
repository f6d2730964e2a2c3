"""Choosing a learning rate from a study that varies it, by validation perplexity (never the test split)."""

from __future__ import annotations

import math
from pathlib import Path

from ..study.spec import SEED_KEY, Study, runs_root
from ..study.state import is_complete
from ..train.rundir import RunDir
from .stats import Stat, log_stat

LR_KEY = "train.lr"


def learning_rates(study: Study, root: str | Path | None = None) -> list[dict]:
    """For each setting of the study apart from its learning rate (e.g. each model size), every rate's
    validation perplexity of its first trained language (geometric mean over seeds) and whether it is the best:
    the one whose 95 % interval over seeds ends lowest. Empty when the study does not vary train.lr."""
    root = runs_root(root)
    by_setting: dict[tuple, dict[float, list[float]]] = {}
    for spec in study.runs:
        if LR_KEY not in spec.dims or not is_complete(spec.run_dir(root)):
            continue
        others = tuple((k, v) for k, v in spec.dims.items() if k not in (LR_KEY, SEED_KEY))
        valid = RunDir(spec.run_dir(root)).read_info(tolerant=True).get("valid", {})
        ppl = valid.get(spec.mixture.trained[0], {}).get("ppl")  # (a study's run validates only what it trains)
        if ppl is not None and math.isfinite(ppl):
            by_setting.setdefault(others, {}).setdefault(spec.dims[LR_KEY], []).append(ppl)
    rows = []
    for others, by_lr in by_setting.items():
        stats: dict[float, Stat] = {lr: log_stat(ppls) for lr, ppls in sorted(by_lr.items())}
        # the lowest upper end of the seed interval: a rate that is good for every seed, not for one lucky one
        best = min(stats, key=lambda lr: (stats[lr].hi if stats[lr].n > 1 else stats[lr].mean, stats[lr].mean))
        setting = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in others) or "all runs"
        rows += [{"setting": setting, "lr": lr, "valid_ppl": stat, "best": lr == best} for lr, stat in stats.items()]
    return rows
