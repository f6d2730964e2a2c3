"""`xling.Study`: a paper experiment (a grid of runs) to run, watch, read as rows and report."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import XlingError
from .checks import check_arguments
from .configs import Config, _with_corpora
from .runs import Run
from .scores import rows_or_frame

_LEVELS = ("run", "setting")


def _number(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def _stat(prefix: str, stat) -> dict:
    seeds = stat.n >= 2  # one seed has no interval (not a zero-width one)
    return {prefix: _number(stat.mean), f"{prefix}_lo": _number(stat.lo) if seeds else None,
            f"{prefix}_hi": _number(stat.hi) if seeds else None}


class Study:
    """A study: a named grid of runs (a YAML file, see `xling study list`), and where its runs live.

    `study`: a study's name (the paper's experiments ship with xling; yours are found in ./studies or
    $XLING_STUDIES), a path to a YAML file, or the study itself as a mapping (name, base, grid, groups,
    ...: the file's content; its base may be a `Config`, a packaged config's name or a YAML file, or a mapping
    whose corpus is documents in memory, as in `Config`; such a study is found again by the same mapping, or,
    for `xling study` and others, once you write the mapping as YAML to ./studies/NAME.yaml). `root`: the
    directory of run directories (default $XLING_RUNS or ./runs); `db`: the results store (default ROOT/xling.db). Every run config is checked when the study is read.

        study = xling.Study("headline-cpu")
        study.run(workers=2)               # trains what is missing; safe to interrupt and call again
        rows = study.results()             # one row per run and language: ppl, TEff, ...
        study.report()                     # reports/headline-cpu/report.md and .html
    """

    def __init__(self, study: str | os.PathLike | Mapping[str, Any], root: str | os.PathLike | None = None,
                 db: str | os.PathLike | None = None) -> None:
        from ..study.spec import build_study, load_study, runs_root

        check_arguments(study=(study, (str, os.PathLike, Mapping)), root=(root, (str, os.PathLike, type(None))),
                        db=(db, (str, os.PathLike, type(None))))
        if isinstance(study, Mapping):  # its base config's corpus may be documents in memory, as in Config
            data = dict(study)
            if isinstance(data.get("base"), (Config, str, os.PathLike)):  # a Config, a recipe's name, a YAML file
                data["base"] = Config(data["base"]).to_dict()
            elif isinstance(data.get("base"), Mapping):
                data["base"] = _with_corpora(dict(data["base"]))
            self._study = build_study(data)
        else:
            self._study = load_study(str(study))
        self.root = runs_root(root)
        """Where the run directories are: ROOT/STUDY/RUN_ID."""
        self.db = Path(db) if db is not None else None
        """The results store (None: ROOT/xling.db)."""

    @property
    def name(self) -> str:
        """The study's name: its runs are ROOT/NAME/RUN_ID."""
        return self._study.name

    @property
    def description(self) -> str:
        """What the study asks, in a few sentences."""
        return self._study.description

    @property
    def paper(self) -> str:
        """Which table or figure of the paper the study reproduces."""
        return self._study.paper

    def __repr__(self) -> str:
        return f"Study({self.name!r}, root={str(self.root)!r}, runs={len(self._study.runs)})"

    def runs(self) -> list[Run]:
        """Every run of the study, trained or not (`Run.status`, `status`), in the file's order."""
        return [Run._of_study(spec.run_dir(self.root)) for spec in self._study.runs]

    def status(self) -> list[dict]:
        """One row per run: id, group, state (pending, running, interrupted, failed, trained: training done
        but no test evaluation yet, which a rerun adds; completed; damaged: a file that cannot be read, the reason
        as its error), step, checkpoint (the step a resume starts from), steps, error, evaluated (its test
        evaluation is there), and twin: for a pending run, a completed run of another study under the same root
        with its config, which `run` copies instead of training (else None)."""
        from ..study.runner import find_twin
        from ..study.state import study_status

        rows = study_status(self._study, self.root)
        for row, spec in zip(rows, self._study.runs):
            twin = find_twin(spec, self.root) if row["state"] == "pending" else None
            row["twin"] = str(twin.relative_to(self.root)) if twin else None
        return rows

    def run(self, workers: int | str = 1, *, engine: str = "local", gpus: str | Sequence[int] | None = None,
            runs_per_gpu: int = 1, loggers: Sequence[str] = (), reuse: bool = True, wait: bool = True,
            progress: bool | None = None, log: Callable[[str], None] | None = print) -> dict:
        """Train every run that is not complete; returns counts (total, completed, failed). Safe to
        interrupt and call again: complete runs are skipped and interrupted ones resumed.

        `workers` runs at a time (1: in this process; more: worker processes, or Ray tasks with ``engine="ray"``;
        ``"auto"``, as `xling study run`: on the CPU one per usable core, at most one per run and what memory
        holds). Worker processes are spawned: a script that asks for more than one needs its top level under
        ``if __name__ == "__main__":``. `gpus` ``"auto"`` or GPU
        numbers gives each worker its own GPU (`runs_per_gpu` workers per GPU). `reuse`: copy a run whose
        twin (same config) is complete in another study under the same root. `wait`: wait for runs
        another process is training (False: leave them to it). `loggers`: live logs of each run. `log`
        is told of progress, one line per finished run (None: silent). As `xling study run`.
        """
        from ..study.placement import parse_gpus
        from ..study.runner import run_study

        check_arguments(runs_per_gpu=(runs_per_gpu, int, 1, 1024), reuse=(reuse, bool), wait=(wait, bool),
                        progress=(progress, (bool, type(None))))
        if log is not None and not callable(log):
            raise XlingError(f"log must be a function told each progress line (print), or None, got {log!r}")
        if isinstance(gpus, str) and gpus != "auto":
            gpus = parse_gpus(gpus)
        elif gpus is not None and not isinstance(gpus, str):
            if not isinstance(gpus, Sequence):
                raise XlingError(f"gpus must be 'auto', GPU numbers as text ('0,1') or a list of them, got {gpus!r}")
            check_arguments(**{f"gpus[{i}]": (g, int, 0, 4096) for i, g in enumerate(gpus)})
            gpus = tuple(int(g) for g in gpus)
        return run_study(self._study, self.root, workers=workers, engine=engine, db=self.db, progress=progress,
                         log=log, loggers=loggers, reuse=reuse, gpus=gpus, runs_per_gpu=runs_per_gpu,
                         wait=wait)

    def results(self, level: str = "run", frame: bool = False) -> Any:
        """The study's results as rows (dicts), or a pandas DataFrame with `frame`; what `report` shows.

        ``level="run"``: one row per finished run and language it trained: study, run, group, setting,
        the values of every group's grid keys (``languages.p``, ``train.seed``, ...: the run's own, whether its group
        varies or sets them), language, role (L1: the base language,
        L2: another), monolingual, fraction (the language's expected share of the data budget, the paper's
        accounting) and fraction_sampled, length (training, in the study's 1x), ppl (test), and against
        the monolingual law fitted to the study's ladder: mlpe, mlte, teff (the verdict's law form) and
        teff_paper, teff_loss (each form), teff_ladder (read off the ladder, no law), teff_sampled, warnings.

        ``level="setting"``: one row per setting (its grid values without the seed, as columns) and language, over seeds
        (the clones of a run that has several are pooled into one row, language labelled e.g. ``"L2–L3"``, their
        perplexities' geometric mean within each run; a transformed language is labelled e.g. ``"L2 inverted"``):
        ppl (geometric mean) and teff (mean), each with its 95 % interval over seeds (``_lo``, ``_hi``; None
        with one seed), mlpe (of the setting's share, under the verdict's law form), teff_paper,
        teff_loss and teff_ladder likewise (as at run level: each law form, and no law), seeds, and the
        paper's published ppl_published and teff_published where it has one (compare teff_published with
        teff_paper, ours under the paper's law form). Syncs the results store first.
        """
        from ..notation import dotted_get
        from ..report.study_report import analyse_study
        from ..report.summary import TEFF_FORMS

        if level not in _LEVELS:
            raise XlingError(f"level must be {' or '.join(_LEVELS)}, got {level!r}")
        a = analyse_study(self._study, self.root, self.db)
        grid = list(dict.fromkeys(k for r in a.rows for k in r.spec.dims))  # every group's keys, in every row
        values = lambda spec, keys: {k: spec.dims[k] if k in spec.dims else dotted_get(spec.config, k) for k in keys}
        if level == "run":
            rows = [{"study": self.name, "run": r.spec.id, "group": r.spec.group, "setting": r.spec.setting,
                     **values(r.spec, grid),
                     "language": r.language, "role": r.role, "monolingual": r.mono,
                     "fraction": r.fraction, "fraction_sampled": r.fraction_sampled, "length": r.length,
                     "ppl": r.ppl, "mlpe": _number(r.mlpe), "mlte": _number(r.mlte), "teff": _number(r.teff),
                     **{f"teff_{form}": _number(r.teff_forms.get(form)) for form in TEFF_FORMS},
                     "teff_sampled": _number(r.teff_sampled), "warnings": "; ".join(r.warnings)} for r in a.rows]
        else:
            rows = [{"study": self.name, "setting": s.setting, "group": s.group,
                     **values(s.spec, [k for k in grid if k != "train.seed"]), "language": s.label, "role": s.role,
                     "monolingual": mono, "fraction": s.fraction, **_stat("ppl", s.ppl), "mlpe": _number(s.mlpe),
                     **_stat("teff", s.teff), **{k: v for form, stat in sorted(s.teff_forms.items())
                                                  for k, v in _stat(f"teff_{form}", stat).items()},
                     "seeds": s.ppl.n, "ppl_published": s.paper.ppl if s.paper else None,
                     "teff_published": s.paper.teff if s.paper else None, "warnings": "; ".join(s.warnings)}
                    for s, mono in [(s, True) for s in a.ladder] + [(s, False) for s in a.summaries]]
        return rows_or_frame(rows, frame)

    def report(self, out: str | os.PathLike | None = None, screenshot: bool = False,
               task: str | os.PathLike = "bible-parts") -> Path:
        """Write the study's report: report.md, a self-contained report.html and the figures (PNG and SVG)
        in `out` (default reports/NAME); returns the path of report.md. `screenshot`: also report.png, the
        page as headless Chromium shows it (needs one: apt-get install chromium-headless-shell). `task`: the
        transfer task whose results (`xling align-report --task`) it shows."""
        from ..report.browser import require_browser
        from ..report.browser import screenshot as take_screenshot
        from ..report.study_report import write_report

        check_arguments(task=(task, (str, os.PathLike)))

        browser = require_browser() if screenshot else None  # before anything is written
        path, _ = write_report(self._study, self.root, out, self.db, str(task))
        if browser:
            take_screenshot(path.with_suffix(".html"), path.with_suffix(".png"), browser=browser)
        else:  # a screenshot of an earlier report would no longer show this one
            path.with_suffix(".png").unlink(missing_ok=True)
        return path

    def align_report(self, out: str | os.PathLike | None = None, compute: bool = True,
                     task: str | os.PathLike = "bible-parts", workers: int | str = "auto",
                     grad_sequences: int | None = None, grad_precision: str = "auto", pairs: str = "first",
                     log: Callable[[str], None] | None = print) -> Path:
        """As `xling align-report`: align (and transfer on `task`) every finished multilingual run that lacks it,
        then write alignment.md and .html in `out` (default reports/NAME); returns the path of alignment.md.
        `compute` False: report only what the run directories hold. `grad_sequences`: default 500 (the authors')
        for a paper-scale study, else 100; `grad_precision`: "auto" (the authors': fp16 autocast on a GPU, fp32 on
        a CPU), "fp32" or "fp16" (a named one computes again gradients taken in the other). `pairs`: "first" aligns
        each run's first two languages, "all" every pair of a run of more languages too (a row each in the report).
        `log` is told of each analysis done (None: silent)."""
        from ..analysis.alignment import check_grad_precision
        from ..fsio import check_output_file
        from ..report.alignment_report import write_alignment_report
        from ..report.alignment_results import check_pairs

        check_arguments(out=(out, (str, os.PathLike, type(None))), compute=(compute, bool),
                        task=(task, (str, os.PathLike)), grad_sequences=(grad_sequences, (int, type(None)), 0, 10**7))
        check_grad_precision(grad_precision)
        check_pairs(pairs)
        if out is not None:
            check_output_file(out, directory=True)  # before minutes of alignment and transfer
        if workers != "auto":
            check_arguments(workers=(workers, int, 1, 4096))
        if log is not None and not callable(log):
            raise XlingError(f"log must be a function told each analysis done (print), or None, got {log!r}")
        grads = {} if grad_sequences is None else {"grad_sequences": grad_sequences}
        return write_alignment_report(self._study, self.root, out, compute=compute, task=str(task), log=log,
                                      workers=workers, grad_precision=grad_precision, pairs=pairs, **grads)
