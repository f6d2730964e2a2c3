"""One study across the nodes of a SLURM job array, without Ray (`xling study sbatch`).

Every array task runs `xling study run` on the same shared ROOT. The per-run locks (flock on
ROOT/STUDY/RUN/.lock, checked at start by `state.check_locking`) keep two tasks from training one
run; a task leaves the runs other tasks hold to them and stops when nothing is left for it
(--no-wait). Each task indexes its runs into a scratch store on its own node; the run directories
are the truth, and `xling report` (or `xling store rebuild`) indexes them into ROOT/xling.db after.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import XlingError
from .spec import Study, runs_root


def sbatch_script(study: Study, tasks: int, root: str | Path | None = None, workers: int | None = None,
                  gpus: str | None = None, runs_per_gpu: int = 1, loggers: tuple[str, ...] = (),
                  python: str | None = None) -> str:
    """The sbatch script of a `tasks`-task array that runs `study` (loaded from a file) on the shared
    `root`, with this Python (`python`) and absolute paths, in this directory. Cluster settings (partition, time, GPUs
    per node) go on sbatch's command line."""
    if tasks < 1:
        raise XlingError(f"--array must be >= 1, got {tasks}")
    if tasks > len(study.runs):
        raise XlingError(f"--array {tasks} is more tasks than study {study.name} has runs ({len(study.runs)}): the others "
                         f"would find nothing to do; give --array {len(study.runs)} or fewer")
    if study.path is None:
        raise XlingError(f"study {study.name} has no file to run from")
    root = runs_root(root).resolve()
    if any(c.isspace() for c in str(root)):  # (sbatch splits an #SBATCH line at spaces: the job's log would go astray)
        raise XlingError(f"--root {root} holds a space, which an #SBATCH --output line cannot: give a ROOT without "
                         "spaces (the directory the study runs from may have them)")
    packaged = Path(__file__).resolve().parents[1] in study.path.resolve().parents
    study_arg = study.name if packaged else str(study.path.resolve())  # a packaged study's name works anywhere
    run = [python or sys.executable, "-m", "xling", "study", "run", study_arg, "--root", str(root), "--no-wait"]
    if workers:
        run += ["--workers", str(workers)]
    if gpus:
        run += ["--gpus", gpus] + (["--runs-per-gpu", str(runs_per_gpu)] if runs_per_gpu != 1 else [])
    for name in loggers:
        run += ["--log", name]
    command = " ".join(shlex.quote(part) for part in run)
    db = '"${TMPDIR:-/tmp}/xling-${SLURM_ARRAY_JOB_ID:-0}_${SLURM_ARRAY_TASK_ID:-0}.db"'
    lines = [
        "#!/bin/bash",
        f"# xling study {study.name} ({len(study.runs)} runs) on a SLURM job array of {tasks} task(s).",
        f"# Every task runs the study on the shared directory {root}: a lock per run keeps two tasks",
        "# off one run, and a task stops when every run is complete or held by another task.",
        "# Submit with your cluster's settings on the command line, e.g.",
        "#   sbatch --partition=gpu --gpus-per-node=4 --cpus-per-task=32 --time=24:00:00 THIS_FILE" if gpus else
        "#   sbatch --partition=cpu --cpus-per-task=32 --time=24:00:00 THIS_FILE",
        f"# then, when the array has finished: xling report {shlex.quote(study_arg)} --root {shlex.quote(str(root))}",
        "# Two minutes before the time limit each task gets SIGTERM (--signal): its runs end their step, checkpoint",
        "# it and stop (exit status 143); submit the array again to finish.",
        f"#SBATCH --job-name=xling-{study.name}",
        f"#SBATCH --array=0-{tasks - 1}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --signal=TERM@120",
        f"#SBATCH --output={root}/slurm-%A_%a.out",
        "set -euo pipefail",
        "# where the script was written: a study's relative paths (corpus.paths, ...) are read from there",
        f"cd {shlex.quote(str(Path.cwd()))}",
        "# each task's results store is scratch on its node; ROOT's run directories are the results",
        "# srun is given the task's cores where sbatch had -c (Slurm 22.05-23.02 does not pass it on)",
        f"srun ${{SLURM_CPUS_PER_TASK:+--cpus-per-task=\"$SLURM_CPUS_PER_TASK\"}} {command} --db {db}",
    ]
    return "\n".join(lines) + "\n"
