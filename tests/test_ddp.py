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


def _torchrun_two_processes(tiny_corpus_dir, tmp_path) -> subprocess.CompletedProcess:
    """`xling train` of the tiny config into tmp_path/ddp by two CPU processes under torchrun."""
    config = tmp_path / "tiny.yaml"
    # two CPU processes even on a GPU machine (two processes on one GPU is refused)
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir, train={"device": "cpu"})), encoding="utf-8")
    # XLING_CACHE (the session's cache) is inherited; torchrun leaves a torchelastic_* folder in TMPDIR
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "xling.cli", "train", str(config), "--out", str(tmp_path / "ddp"), "--no-eval", "--quiet"]
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


def test_batch_must_split_evenly_over_processes(tiny_corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(XlingError, match="divisible by the number of processes"):
        Trainer(tiny_config(tiny_corpus_dir), tmp_path / "odd").fit(progress=False)
    assert not (tmp_path / "odd").exists()
