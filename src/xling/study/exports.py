"""Logs for runs that trained without them (`xling export-logs`): TensorBoard event files, an
offline W&B run or metrics.csv, written from a run's metrics.jsonl and eval.json by the same
loggers that `--log` runs while training (`train.live_log`).
"""

from __future__ import annotations

from pathlib import Path

from ..train.live_log import LiveLog
from ..train.rundir import RunDir


def export_run(run_dir: str | Path, logger: str, strict: bool = False) -> str:
    """Write a run's logs for `logger` (tensorboard, wandb, csv), replacing any earlier ones.

    Returns a note when the logger's package is missing (nothing is written then), else "". A logger that fails is
    dropped with a warning, as in training (a study adopting a twin goes on), or with `strict` (`xling export-logs`,
    whose whole work it is) an XlingError.
    """
    run = RunDir(run_dir)
    run.check_own()  # (a received run's tensorboard/ linked elsewhere would be written there)
    reports = [run.read_evaluation(path) for path in run.eval_paths()]  # (a damaged one: before anything is written)
    with LiveLog(run.path, (logger,), training=not strict) as live:
        if live.notes:
            return live.notes[0]
        info = run.read_info(tolerant=True)
        records = run.read_metrics()
        languages = info.get("languages") or sorted({k.split("/", 1)[1] for r in records for k in r
                                                     if k.startswith("ppl/")} | set(info.get("tokens") or {}))
        live.begin(records, languages)
        logged = {(r.get("split"), r.get("step")) for r in records if "split" in r}  # training's own validations
        for report in reports:
            if report and (report.get("split", "test"), report.get("step") or 0) not in logged:  # once per split, step
                live.log_evaluation(report)
    return ""
