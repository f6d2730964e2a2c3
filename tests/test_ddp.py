"""Data-parallel training (torchrun, two CPU processes over gloo) equals gradient accumulation."""

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import run_losses, tiny_config, tiny_config_dict
from xling.errors import XlingError
from xling.train.rundir import RunDir
from xling.train.trainer import Trainer


def _torchrun_command(tiny_corpus_dir, tmp_path, **train) -> tuple[list[str], dict]:
    """`xling train` of the tiny config (`train` on top) into tmp_path/ddp by two CPU processes under torchrun, and
    its environment."""
    config = tmp_path / "tiny.yaml"
    # two CPU processes even on a GPU machine (two processes on one GPU is refused)
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir, train={"device": "cpu", **train})),
                      encoding="utf-8")
    # XLING_CACHE (the session's cache) is inherited; torchrun leaves a torchelastic_* folder in TMPDIR
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "xling.cli", "train", str(config), "--out", str(tmp_path / "ddp"), "--no-eval", "--quiet"], env


def _torchrun_two_processes(tiny_corpus_dir, tmp_path) -> subprocess.CompletedProcess:
    cmd, env = _torchrun_command(tiny_corpus_dir, tmp_path)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_process_accumulating_two(tiny_corpus_dir, tmp_path):
    done = _torchrun_two_processes(tiny_corpus_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    Trainer(tiny_config(tiny_corpus_dir, train={"grad_accum": 2, "device": "cpu"}), tmp_path / "accum").fit(progress=False)
    ddp, accum = run_losses(tmp_path / "ddp"), run_losses(tmp_path / "accum")
    assert len(ddp) == 12
    np.testing.assert_allclose(ddp, accum, rtol=1e-5)  # global mean loss of each step
    info = RunDir(tmp_path / "ddp").read_info()
    assert info["status"] == "completed" and info["processes"] == 2
    assert sum(info["tokens"].values()) == 12 * 8 * 32  # rank 0 accounts for every row of the batch
    assert [p.name for p in RunDir(tmp_path / "ddp").checkpoint_dirs()] == ["step_0000008", "step_0000012"]


@pytest.mark.slow
def test_every_process_stops_when_rank_0_is_refused_the_run(tiny_corpus_dir, tmp_path):
    from xling.train.lock import run_lock

    with run_lock(tmp_path / "ddp") as got:  # another process trains this run
        assert got
        # every rank says why (rank 1 used to wait for rank 0 at its first collective until torchrun's agent tore it
        # down: at once on one node; across nodes, not before the collective's timeout)
        done = _torchrun_two_processes(tiny_corpus_dir, tmp_path)
    assert done.returncode != 0
    assert "is being trained by process" in done.stderr and "rank 0 refused to train" in done.stderr
    assert not RunDir(tmp_path / "ddp").info_path.exists()


def _rank_0(torchrun_pid: int) -> int | None:
    """The process id of torchrun's rank 0 (its child whose environment says RANK=0)."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(torchrun_pid) and \
                    b"RANK=0" in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


@pytest.mark.slow
@pytest.mark.parametrize("to", ["the job", "rank 0"])
def test_a_sigterm_under_torchrun_stops_every_process_after_one_step_with_a_checkpoint(tiny_corpus_dir, tmp_path, to):
    """SIGTERM to the job (as a SLURM time limit sends it), or to one process only: the processes agree at their next
    logged step, rank 0 checkpoints it and records interrupted, and none leaves before (one that left first would have
    torchrun's agent kill rank 0 while it writes); before, they died at once and run.json said running. A resume under
    torchrun then trains the losses of an uninterrupted run (one process accumulating two micro-batches)."""
    import signal
    import time

    steps = {"steps": 300, "log_every": 2, "checkpoint_every": 1000}
    cmd, env = _torchrun_command(tiny_corpus_dir, tmp_path, **steps)
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    metrics = tmp_path / "ddp" / "metrics.jsonl"
    while job.poll() is None and not (metrics.is_file() and metrics.read_text().count('"loss"') >= 3):
        time.sleep(0.05)
    if to == "the job":
        os.killpg(job.pid, signal.SIGTERM)
    else:
        os.kill(_rank_0(job.pid), signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    info, run = RunDir(tmp_path / "ddp").read_info(), RunDir(tmp_path / "ddp")
    assert info["status"] == "interrupted" and 0 < info["step"] < 300, err[-3000:]
    assert [p.name for p in run.checkpoint_dirs()] == [f"step_{info['step']:07d}"]
    assert err.count("xling: interrupted; continue with: xling train") == 1  # rank 0 alone says it
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    Trainer(tiny_config(tiny_corpus_dir, train={"grad_accum": 2, "device": "cpu", **steps}),
            tmp_path / "accum").fit(progress=False)
    np.testing.assert_allclose(run_losses(tmp_path / "ddp"), run_losses(tmp_path / "accum"), rtol=1e-5)


def test_batch_must_split_evenly_over_processes(tiny_corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(XlingError, match="divisible by the number of processes"):
        Trainer(tiny_config(tiny_corpus_dir), tmp_path / "odd").fit(progress=False)
    assert not (tmp_path / "odd").exists()
