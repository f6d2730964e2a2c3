"""Optional exports of a finished run's metrics for people who use them: TensorBoard event files
and an offline W&B run. Each is skipped with a note when its package is not installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..fsio import read_json
from ..train.rundir import RunDir


def export_run(run_dir: str | Path, logger: str) -> str:
    """Write a finished run's metrics for TensorBoard (run_dir/tensorboard) or W&B offline (run_dir/wandb).

    Returns a note when the package is missing (nothing is written then), else "".
    """
    run = RunDir(run_dir)
    rec = run.read_study_record()
    records = run.read_metrics()
    evals = read_json(run.eval_path(), default={}).get("languages", {})
    if logger == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return "TensorBoard logging skipped: pip install 'xling[tensorboard]'"
        out = run.export_dir("tensorboard")
        shutil.rmtree(out, ignore_errors=True)  # a rerun rewrites the whole log, so no duplicates
        writer = SummaryWriter(str(out))
        for r in records:
            for key, value in _scalars(r).items():
                writer.add_scalar(key, value, r["step"])
        for lang, e in evals.items():
            writer.add_scalar(f"test_ppl/{lang}", e["ppl"], records[-1]["step"] if records else 0)
        writer.close()
        return ""
    if logger == "wandb":
        try:
            import wandb
        except ImportError:
            return "W&B logging skipped: pip install 'xling[wandb]'"
        wb = wandb.init(mode="offline", dir=str(run.path), project=f"xling-{rec.get('study', 'runs')}",
                        name=rec.get("id", run.path.name), config=rec.get("config", {}), reinit=True)
        for r in records:
            wb.log(_scalars(r), step=r["step"])
        wb.summary.update({f"test_ppl/{lang}": e["ppl"] for lang, e in evals.items()})
        wb.finish()
        return ""
    raise ValueError(f"unknown logger {logger!r}")


def _scalars(record: dict) -> dict[str, float]:
    out = {}
    for key, value in record.items():
        if key == "tokens" and isinstance(value, dict):
            out.update({f"tokens/{lang}": v for lang, v in value.items()})
        elif isinstance(value, (int, float)) and key != "step":
            out[f"valid_{key}" if key.startswith("ppl/") else key] = value
    return out
