"""Scaling a study out: one GPU per worker (faked: no GPU here), Ray's resource requests, SLURM job
arrays on a shared --root, and the lock check that makes them safe."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from test_study import small_study, tiny_study_dict, write_study
from xling.api import Study as xling_study
from xling.cli import main
from xling.errors import XlingError
from xling.fsio import read_json
from xling.study import launch, placement, state
from xling.study.launch import Launch
from xling.study.runner import run_study
from xling.study.spec import build_study
from xling.study.state import check_locking, is_complete
from xling.train.lock import run_lock


@pytest.fixture
def two_gpus(monkeypatch):
    """This process 'sees' two GPUs (the count torch would give); workers never touch CUDA here."""
    monkeypatch.setattr(placement, "gpu_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# --------------------------------------------------------------------------- workers on the CPU


def test_auto_workers_one_per_core_at_most_one_per_run_and_what_memory_holds(tiny_corpus_dir, monkeypatch):
    runs = small_study(tiny_corpus_dir, "auto", ps=(0.5, 0.1), fractions=(0.1, 0.2, 0.3, 0.4), seeds=(0, 1)).runs
    assert len(runs) == 8
    monkeypatch.setattr(launch, "gpu_count", lambda: 0)  # the CPU's rule, also on a machine with a GPU
    monkeypatch.setattr(launch, "usable_cores", lambda: 6)
    monkeypatch.setattr(launch, "available_memory", lambda: None)
    assert launch.auto_workers(runs) == 6
    assert launch.auto_workers(runs[:3]) == 3 and launch.auto_workers([]) == 1
    need = max(launch.run_memory(r) for r in runs)
    monkeypatch.setattr(launch, "available_memory", lambda: 4 * need)  # half of it holds two runs
    assert launch.auto_workers(runs) == 2
    monkeypatch.setattr(launch, "available_memory", lambda: need)  # not even one: one anyway
    assert launch.auto_workers(runs) == 1


def test_cgroup_limits_on_the_way_up_cap_memory_and_cores(tmp_path, monkeypatch):
    job, parent = tmp_path / "slurm" / "job_7", tmp_path / "slurm"
    job.mkdir(parents=True)
    (job / "memory.max").write_text("1000\n")  # the job's limit: 1000 bytes, 800 used, 300 of it reclaimable cache
    (job / "memory.current").write_text("800\n")
    (job / "memory.stat").write_text("anon 500\ninactive_file 300\n")
    (parent / "memory.max").write_text("max\n")  # no limit above it
    (parent / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    (job / "cpu.max").write_text("max 100000\n")
    monkeypatch.setattr(launch, "_cgroup_dirs", lambda: [job, parent, tmp_path])
    assert launch._cgroup_free() == 500 and launch._cgroup_cpus() == 1.5
    assert launch.available_memory() == 500
    monkeypatch.setattr(launch.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert launch.usable_cores() == 2
    monkeypatch.setattr(launch, "_cgroup_dirs", lambda: [])  # no cgroup v2: the machine's own numbers
    assert launch._cgroup_free() is None and launch.usable_cores() == 8


def test_run_memory_estimate_is_above_the_measured_peaks_and_grows_with_the_model(tiny_corpus_dir):
    spec = small_study(tiny_corpus_dir, "memory", ps=(0.5,), fractions=(0.1,)).runs[-1]
    measured = {"cpu-xs": 0.40e9, "mini": 0.84e9}  # peak RSS at batch 16 x 128 (2026-11-27, README)
    estimates = {}
    for preset in measured:
        config = {**spec.config, "model": {"preset": preset, "seq_len": 128},
                  "train": {**spec.config["train"], "batch_size": 16, "grad_accum": 1},
                  "tokenizer": {**spec.config["tokenizer"], "vocab_size": 2048}}
        estimates[preset] = launch.run_memory(dataclasses.replace(spec, config=config))
    assert all(measured[p] < estimates[p] < 1.5 * measured[p] for p in measured), estimates


def test_study_run_without_workers_trains_one_run_per_core(tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launch, "gpu_count", lambda: 0)  # the CPU's rule, also on a machine with a GPU
    monkeypatch.setattr(launch, "usable_cores", lambda: 2)
    data = tiny_study_dict(tiny_corpus_dir, name="percore", seeds=(0,), ps=(0.5,), fractions=(0.1,))
    path = write_study(tmp_path / "percore.yaml", data)
    assert main(["study", "run", str(path), "--root", str(tmp_path / "runs")]) == 0
    assert "(2 workers, local)" in capsys.readouterr().out
    lines = []  # the Python API trains in its own process unless asked for "auto"
    assert xling_study(data, root=tmp_path / "api").run(log=lines.append)["completed"] == 2
    assert "workers" not in lines[0]


def test_auto_workers_are_counted_after_twins_are_copied(tiny_corpus_dir, tmp_path, monkeypatch):
    """Of the second study's two runs one is the first study's twin: one run is left to train, so one worker (a
    count made before copying would have started two), with the threads the copied run trained with."""
    first = small_study(tiny_corpus_dir, "first-auto", ps=(0.5,), fractions=(0.1,))
    assert run_study(first, tmp_path, log=lambda *_: None)["completed"] == 2
    monkeypatch.setattr(launch, "usable_cores", lambda: 8)
    second = small_study(tiny_corpus_dir, "second-auto", ps=(0.1,), fractions=(0.1,))
    lines = []
    assert run_study(second, tmp_path, workers="auto", log=lines.append)["completed"] == 2
    ready = next(line for line in lines if line.startswith("data ready"))
    assert not re.search(r"\d+ workers", ready) and not any(re.search(r"\d+ workers", line) for line in lines[:1])
    assert any(line.startswith("1 run left: 1 thread each") for line in lines), lines  # as its twin had


def test_a_rerun_trains_its_runs_with_the_threads_of_a_fresh_study(tiny_corpus_dir, tmp_path, monkeypatch):
    """Two runs on two cores train with one thread each; rerun with one of them gone, that one again has one thread
    (in a worker process, not two threads here) and so the same losses: another count sums in another order."""
    import shutil

    from xling.train.rundir import RunDir

    monkeypatch.setattr(launch, "gpu_count", lambda: 0)
    monkeypatch.setattr(launch, "usable_cores", lambda: 2)
    study = small_study(tiny_corpus_dir, "threads", ps=(0.5,), fractions=(0.1,))
    assert run_study(study, tmp_path, workers="auto", log=lambda *_: None)["completed"] == 2
    gone = study.runs[0].run_dir(tmp_path)
    fresh = [(r["step"], r["loss"]) for r in RunDir(gone).read_metrics() if "loss" in r]
    assert read_json(gone / "run.json")["threads"] == 1
    shutil.rmtree(gone)
    lines, before = [], torch.get_num_threads()
    torch.set_num_threads(2)  # as `xling` has on two cores (the tests set one)
    try:
        assert run_study(study, tmp_path, workers="auto", log=lines.append)["completed"] == 2
    finally:
        torch.set_num_threads(before)
    assert any(line.startswith("1 run left: 1 thread each, as the study's runs have") for line in lines), lines
    assert read_json(gone / "run.json")["threads"] == 1
    assert [(r["step"], r["loss"]) for r in RunDir(gone).read_metrics() if "loss" in r] == fresh


def test_auto_workers_leave_gpu_runs_one_at_a_time(tiny_corpus_dir, monkeypatch):
    runs = small_study(tiny_corpus_dir, "gpu-auto", ps=(0.5,), fractions=(0.1, 0.2)).runs
    monkeypatch.setattr(launch, "usable_cores", lambda: 8)
    monkeypatch.setattr(launch, "available_memory", lambda: None)
    monkeypatch.setattr(launch, "gpu_count", lambda: 0)
    assert launch.auto_workers(runs) == 3  # device auto, no GPU: the CPU
    monkeypatch.setattr(launch, "gpu_count", lambda: 1)
    assert launch.auto_workers(runs) == 1  # device auto would put every worker on cuda:0
    monkeypatch.setattr(launch, "gpu_count", lambda: 0)
    on_cuda = [dataclasses.replace(r, config={**r.config, "train": {**r.config["train"], "device": "cuda"}}) for r in runs]
    assert launch.auto_workers(on_cuda) == 1


# --------------------------------------------------------------------------- GPU placement


@pytest.mark.parametrize("text, parsed", [("auto", "auto"), ("0", (0,)), ("0,1,3", (0, 1, 3)), (" 2 ", (2,))])
def test_gpus_argument(text, parsed):
    assert placement.parse_gpus(text) == parsed


@pytest.mark.parametrize("text", ["", "a", "0,0", "-1", "0;1", "1,,2"])
def test_bad_gpus_argument_is_one_line(text):
    with pytest.raises(XlingError, match="--gpus"):
        placement.parse_gpus(text)


def test_workers_go_round_the_gpus(two_gpus):
    assert placement.plan_gpus("auto", None) == ["0", "1"]
    assert placement.plan_gpus("auto", None, runs_per_gpu=2) == ["0", "1", "0", "1"]
    assert placement.plan_gpus("auto", 3, runs_per_gpu=2) == ["0", "1", "0"]
    assert placement.plan_gpus((1,), None, runs_per_gpu=3) == ["1", "1", "1"]
    assert placement.plan_gpus(None, 4) is None  # no --gpus: workers inherit this process's GPUs
    with pytest.raises(XlingError, match="no GPU 2; this process sees 2"):
        placement.plan_gpus((0, 2), None)
    with pytest.raises(XlingError, match="--workers 5 is more than 2 GPU"):
        placement.plan_gpus("auto", 5, runs_per_gpu=2)
    with pytest.raises(XlingError, match="--runs-per-gpu needs --gpus"):
        placement.plan_gpus(None, 2, runs_per_gpu=2)


def test_gpus_are_numbered_within_an_inherited_cuda_visible_devices(monkeypatch):
    """Under SLURM (CUDA_VISIBLE_DEVICES=2,3 or GPU UUIDs) GPU i is the i-th of them."""
    monkeypatch.setattr(placement, "gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    assert placement.plan_gpus("auto", None) == ["GPU-aaaa", "GPU-bbbb"]
    assert placement.plan_gpus((1,), None) == ["GPU-bbbb"]


def _report_environment(barrier) -> dict:
    barrier.wait(60)  # every worker holds one task at the same time: each is seen once
    return {"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": os.environ["OMP_NUM_THREADS"]}


class _Task:
    def __init__(self, n):
        self.n = n

    def to_json(self):
        return self.n


def _mark_then_sleep(n, folder) -> int:
    Path(folder, str(n)).touch()
    time.sleep(20)  # long enough that a slow machine's Ctrl-C lands while it runs; the interrupt ends it early
    return n


def _ctrl_c_while_first_runs(task, tasks: int, workers: int, folder: Path, presses: int, gap: float) -> None:
    """Run `tasks` of `task` in a pool; once the first has started, Ctrl-C `presses` times, `gap` s apart (to
    this process only, as after `kill -INT`: the runner passes it on to its workers). It must stop the pool."""
    import signal
    import threading

    def press():
        _wait_for(folder / "0")
        for _ in range(presses):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(gap)

    results = Launch("local", workers, 1).run_each(task, [_Task(n) for n in range(tasks)], str(folder))
    interrupter = threading.Thread(target=press)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        list(results)
    interrupter.join()


def test_runs_queued_in_the_pool_do_not_start_after_an_interrupt(tmp_path):
    # one worker, three tasks: the pool queues the second behind the first at once; Ctrl-C comes while the first runs
    _ctrl_c_while_first_runs(_mark_then_sleep, 3, 1, tmp_path, presses=1, gap=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0"]  # the queued tasks never started


def test_a_second_ctrl_c_while_the_pool_stops_does_not_leave_its_workers_behind(tmp_path):
    import multiprocessing as mp

    # Ctrl-C twice (as `timeout -s INT` sends it, or an impatient user): the second lands while the pool
    # shuts down. An interrupted shutdown left the pool's manager thread running while the process went
    # on, and the workers then waited forever for it at exit.
    _ctrl_c_while_first_runs(_mark_then_sleep, 4, 2, tmp_path, presses=2, gap=0.05)
    assert not mp.active_children()  # every worker has ended: nothing left to wait for at exit


def _slow_to_stop(n, folder) -> int:
    Path(folder, str(n)).touch()
    try:
        time.sleep(30)
    except KeyboardInterrupt:
        time.sleep(30)  # a run whose stop takes long (a big checkpoint being written, say)
    return n


def test_ctrl_c_twice_more_while_the_pool_stops_kills_its_workers(tmp_path):
    import multiprocessing as mp

    start = time.time()
    _ctrl_c_while_first_runs(_slow_to_stop, 2, 1, tmp_path, presses=3, gap=0.5)
    assert not mp.active_children() and time.time() - start < 25  # killed, not waited for (30 s)


def _note_its_stop(n, folder) -> int:
    Path(folder, f"pid-{n}.tmp").write_text(str(os.getpid()))
    os.replace(Path(folder, f"pid-{n}.tmp"), Path(folder, f"pid-{n}"))  # (whole, when seen)
    try:
        time.sleep(30)
    except KeyboardInterrupt:  # as a run marks its run.json interrupted
        Path(folder, f"stopped-{n}").touch()
        raise
    return n


def test_sigterm_stops_the_workers_runs_as_ctrl_c_does_and_they_end(tmp_path):
    import multiprocessing as mp

    # SIGTERM to the workers (`timeout` and SLURM's time limit signal every process of the job): each run stops as
    # after Ctrl-C (a real run's run.json then says interrupted), then its worker ends. Workers used to die at
    # once, their runs left saying "running".
    results = Launch("local", 2, 1).run_each(_note_its_stop, [_Task(0), _Task(1)], str(tmp_path))
    start = time.time()

    def terminate_the_workers():
        for n in (0, 1):
            _wait_for(tmp_path / f"pid-{n}")
        for n in (0, 1):
            os.kill(int((tmp_path / f"pid-{n}").read_text()), signal.SIGTERM)

    killer = threading.Thread(target=terminate_the_workers)
    killer.start()
    with pytest.raises(XlingError, match="a worker process died"):
        list(results)
    killer.join()
    assert (tmp_path / "stopped-0").exists() and (tmp_path / "stopped-1").exists()
    assert not mp.active_children() and time.time() - start < 25  # ended, not waited for (30 s)


def _wait_for(path: Path, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists() and time.time() < end:
        time.sleep(0.02)


def test_a_worker_interrupted_stops_its_task_once_and_starts_no_other(monkeypatch):
    from xling.study import workers

    monkeypatch.setattr(workers, "_interrupted", False)
    monkeypatch.setattr(workers, "_stop", None)
    calls = []

    def task():
        calls.append("ran")
        workers._on_interrupt(2, None)  # the first Ctrl-C stops the task
        return "done"

    with pytest.raises(KeyboardInterrupt):
        workers.guarded(task)
    assert calls == ["ran"] and workers._interrupted and not workers._busy
    workers._busy = True
    workers._on_interrupt(2, None)  # a second Ctrl-C while the first is being handled: nothing raised
    workers._busy = False
    assert workers.guarded(task) is None and calls == ["ran"]  # nothing more starts in this worker


def test_an_idle_worker_ignores_ctrl_c_and_a_set_stop_event_keeps_tasks_from_starting(monkeypatch):
    import multiprocessing as mp

    from xling.study import workers

    monkeypatch.setattr(workers, "_interrupted", False)
    stop = mp.get_context("spawn").Event()
    monkeypatch.setattr(workers, "_stop", stop)
    assert workers.guarded(lambda: "ran") == "ran"
    stop.set()
    assert workers.guarded(lambda: "ran") is None
    monkeypatch.setattr(workers, "_stop", None)
    workers._on_interrupt(2, None)  # idle: no KeyboardInterrupt (it would print a traceback from the pool's queue)
    assert workers.guarded(lambda: "ran") is None


def test_each_local_worker_gets_its_own_cuda_visible_devices(two_gpus):
    import multiprocessing as mp

    launch = Launch.plan("local", None, "auto")
    assert launch.workers == 2 and launch.gpus == ("0", "1")
    with mp.get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(2)
        pool, _ = launch.pool()
        with pool:
            seen = [f.result(timeout=120) for f in [pool.submit(_report_environment, barrier) for _ in range(2)]]
    assert len({s["pid"] for s in seen}) == 2
    assert sorted(s["gpu"] for s in seen) == ["0", "1"]  # distinct devices
    assert all(s["threads"] == str(launch.threads) for s in seen)


def test_a_study_on_two_fake_gpus_records_each_runs_gpu(tiny_corpus_dir, tmp_path, two_gpus):
    study = small_study(tiny_corpus_dir, "gpus", ps=(0.5,), fractions=(0.1,))
    lines = []
    counts = run_study(study, tmp_path, gpus="auto", loggers=("csv",), log=lines.append)
    assert counts == {"total": 2, "completed": 2, "failed": 0}
    assert "2 workers, local, GPUs 0,1" in lines[0]
    gpus = {read_json(r.run_dir(tmp_path) / "study.json")["gpu"] for r in study.runs}
    assert gpus <= {"0", "1"}
    assert any(f"on GPU {g}" in line for line in lines for g in gpus)
    # with device auto, a worker whose GPU is not really there trains on the CPU (on a machine with real GPUs, a
    # worker given one of them trains on it, as its cuda:0)
    for spec in study.runs:
        gpu = read_json(spec.run_dir(tmp_path) / "study.json")["gpu"]
        device = read_json(spec.run_dir(tmp_path) / "run.json")["device"]
        assert device == ("cuda:0" if int(gpu) < torch.cuda.device_count() else "cpu")
    for spec in study.runs:  # the workers logged each run as it trained (--log csv), test perplexities last
        rows = (spec.run_dir(tmp_path) / "metrics.csv").read_text().splitlines()
        assert rows[1].startswith("1,train,") and ",test," in rows[-1]


def test_gpus_on_a_machine_without_gpus_is_one_line(tiny_corpus_dir, tmp_path, capsys, monkeypatch):
    if torch.cuda.device_count():  # a real GPU here: pretend there is none
        monkeypatch.setattr(placement, "gpu_count", lambda: 0)
    path = write_study(tmp_path / "nogpu.yaml", tiny_study_dict(tiny_corpus_dir, name="nogpu", seeds=(0,), ps=(0.5,),
                                                                 fractions=(0.1,)))
    code = main(["study", "run", str(path), "--workers", "2", "--gpus", "0,1", "--root", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--gpus 0,1: PyTorch sees no CUDA GPU here" in err and "leave --gpus out" in err
    assert not (tmp_path / "runs").exists()  # nothing written


# --------------------------------------------------------------------------- Ray's resource requests


class _FakeRay:
    """Records what each task asks Ray for; runs nothing."""

    def __init__(self, node_cpus: float = 64.0):
        self.requests, self.args, self.node_cpus = [], [], node_cpus

    def is_initialized(self):
        return True

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": self.node_cpus}}, {"Alive": False, "Resources": {"CPU": 512.0}}]

    def remote(self, fn):
        fake = self

        class Task:
            def options(self, **request):
                fake.requests.append(request)
                return self

            def remote(self, *args):
                fake.args.append(args)
                return args

        return Task()

    def wait(self, pending, num_returns=1):
        return pending[:1], pending[1:]

    def get(self, ref):
        return {"id": ref[0]["id"], "status": "completed"}


@pytest.mark.parametrize("device, gpus, runs_per_gpu, expected", [
    ("auto", "auto", 1, 1.0), ("auto", "auto", 4, 0.25), ("auto", None, 1, None), ("cuda", None, 1, 1.0),
    ("cpu", "auto", 2, None)])
def test_ray_tasks_ask_for_the_gpus_their_runs_train_on(tiny_corpus_dir, tmp_path, monkeypatch, two_gpus, device,
                                                        gpus, runs_per_gpu, expected):
    data = tiny_study_dict(tiny_corpus_dir, name="rayreq", seeds=(0,), ps=(0.5,), fractions=(0.1,))
    data["base"]["train"]["device"] = device
    study = build_study(data)
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # a cluster: its GPUs are Ray's business, not this process's
    launch = Launch.plan("ray", 2, gpus, runs_per_gpu)
    results = list(launch.execute(study.runs, tmp_path))
    assert [r["id"] for r in results] == [s.id for s in study.runs]
    for request, args in zip(fake.requests, fake.args):
        assert request["num_cpus"] == launch.threads
        assert request.get("num_gpus") == expected
        assert args[3] is (expected is not None)  # on_gpu: the task records the GPU Ray gave it


def test_a_ray_task_never_asks_for_more_cpus_than_a_node_has(tiny_corpus_dir, tmp_path, monkeypatch):
    study = build_study(tiny_study_dict(tiny_corpus_dir, name="raysmall", seeds=(0,), ps=(0.5,), fractions=(0.1,)))
    fake = _FakeRay(node_cpus=1.0)  # the cluster's nodes are smaller than this machine (Ray would wait for ever)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    monkeypatch.setattr(launch, "usable_cores", lambda: 8)
    planned = Launch.plan("ray", 1)
    assert planned.threads == 8
    list(planned.execute(study.runs, tmp_path))
    assert {r["num_cpus"] for r in fake.requests} == {1} and {a[2] for a in fake.args} == {1}


def test_ray_on_this_machine_checks_for_gpus_like_local_workers(monkeypatch, two_gpus):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert Launch.plan("ray", None, "auto", runs_per_gpu=2).workers == 4  # as many tasks at a time as places
    with pytest.raises(XlingError, match="use --gpus auto"):
        Launch.plan("ray", None, (0, 1))
    monkeypatch.setattr(placement, "gpu_count", lambda: 0)
    with pytest.raises(XlingError, match="no CUDA GPU"):
        Launch.plan("ray", None, "auto")


# --------------------------------------------------------------------------- locks and SLURM arrays


def test_lock_check_passes_on_a_local_disk(tmp_path):
    started = time.perf_counter()
    check_locking(tmp_path / "root")
    assert time.perf_counter() - started < 10 and (tmp_path / "root").is_dir()


def test_a_file_system_without_locks_is_one_line(tiny_corpus_dir, tmp_path, monkeypatch, capsys):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(state.fcntl, "flock", no_locks)
    with pytest.raises(XlingError, match=r"file locks do not work there \(flock: No locks available\).*Lustre"):
        check_locking(tmp_path)
    path = write_study(tmp_path / "nolock.yaml", tiny_study_dict(tiny_corpus_dir, name="nolock", seeds=(0,),
                                                                 ps=(0.5,), fractions=(0.1,)))
    assert main(["study", "run", str(path), "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "file locks do not work" in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_locks_that_do_not_keep_a_second_process_out_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(state.fcntl, "flock", lambda fd, op: None)  # 'succeeds' without locking anything
    with pytest.raises(XlingError, match="a second process got the lock this one held"):
        check_locking(tmp_path)


def test_a_slurm_array_runs_one_study_across_its_tasks(tiny_corpus_dir, tmp_path, capsys, monkeypatch):
    """The generated sbatch script, run as two array tasks at once (srun faked, each task with its own
    TMPDIR as on its own node, started elsewhere): together they finish the study, every run trained exactly once,
    its relative corpus path read from where the script was written, and the report afterwards sees every run."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_corpus_dir, tmp_path / "corpus")
    data = tiny_study_dict(Path("corpus"), name="array", seeds=(0,), ps=(0.5,), fractions=(0.1, 0.2, 0.3))
    path, root = write_study(tmp_path / "array.yaml", data), tmp_path / "shared" / "runs"
    assert main(["study", "sbatch", str(path), "--array", "2", "--root", str(root)]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in script and f"--root {root}" in script and "--no-wait" in script
    assert f"{sys.executable} -m xling study run {path}" in script
    assert "#SBATCH --signal=TERM@120" in script
    assert 'srun ${SLURM_CPUS_PER_TASK:+--cpus-per-task="$SLURM_CPUS_PER_TASK"}' in script
    (tmp_path / "job.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')  # (its options)
    (bin_dir / "srun").chmod(0o755)
    tasks = []
    for task in range(2):
        node = tmp_path / f"node{task}"
        node.mkdir()
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "77",
               "SLURM_ARRAY_TASK_ID": str(task), "TMPDIR": str(node), "OMP_NUM_THREADS": "1"}
        tasks.append(subprocess.Popen(["bash", str(tmp_path / "job.sh")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, cwd=node))
    outputs = [t.communicate(timeout=300)[0] for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outputs
    study = build_study(data)
    assert all(is_complete(r.run_dir(root)) for r in study.runs)
    assert [read_json(r.run_dir(root) / "study.json")["attempts"] for r in study.runs] == [1] * len(study.runs)
    assert [len(list((tmp_path / f"node{t}").glob("xling-77_*.db"))) for t in range(2)] == [1, 1]  # scratch stores
    assert main(["report", str(path), "--root", str(root), "--out", str(tmp_path / "report")]) == 0
    assert "4 of 4 runs have results" in (tmp_path / "report" / "report.md").read_text()


def test_no_wait_leaves_a_held_run_to_its_holder(tiny_corpus_dir, tmp_path):
    study = small_study(tiny_corpus_dir, "nowait", ps=(0.5,), fractions=(0.1,))
    held = study.runs[0].run_dir(tmp_path)
    lines = []
    with run_lock(held) as got:
        assert got
        counts = run_study(study, tmp_path, wait=False, log=lines.append)
    assert counts == {"total": 2, "completed": 1, "failed": 0, "elsewhere": 1}
    assert f"left 1 run to the process that holds it (pid {os.getpid()}, on this machine or another that shares ROOT; " \
           "no waiting)" in lines
    assert not is_complete(held) and is_complete(study.runs[1].run_dir(tmp_path))


def test_sbatch_says_what_it_assumed(tmp_path, capsys):
    assert main(["study", "sbatch", "headline-cpu", "--root", str(tmp_path), "--workers", "auto"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in script and "--workers auto" in script  # two tasks unless told
    assert "--partition=gpu" not in script  # a CPU study's example submission asks for no GPUs
    assert main(["study", "sbatch", "headline-cpu", "--root", str(tmp_path), "--array", "12"]) == 2
    assert "more tasks than study headline-cpu has runs (11)" in capsys.readouterr().err
    # sbatch splits an #SBATCH line at spaces: its --output would go astray
    assert main(["study", "sbatch", "headline-cpu", "--root", str(tmp_path / "my root")]) == 2
    assert "holds a space, which an #SBATCH --output line cannot" in capsys.readouterr().err
    assert not (tmp_path / "my root").exists()


def test_sbatch_for_gpus_passes_the_placement_on(tmp_path, capsys):
    assert main(["study", "sbatch", "headline-cpu", "--array", "4", "--root", str(tmp_path), "--gpus", "auto",
                 "--runs-per-gpu", "2", "--log", "csv"]) == 0
    script = capsys.readouterr().out
    last = script.strip().splitlines()[-1]
    assert last.startswith("srun ") and "study run headline-cpu" in last  # a packaged study by name
    assert "--gpus auto --runs-per-gpu 2 --log csv" in last and "--db" in last
    assert Path(tmp_path).is_dir()


@pytest.mark.skipif(not os.environ.get("CI"), reason="a check of CI's installation (CI=true)")
@pytest.mark.parametrize("package", ["ray", "tensorboard"])
def test_ci_installs_what_the_optional_engine_and_logger_tests_need(package):
    """The Ray engine test (test_study.py) and the live TensorBoard test skip without their packages;
    in CI the test extras install them, so there they always run."""
    import importlib.util

    assert importlib.util.find_spec(package), f"CI must install {package}: it is in the test extras (pyproject.toml)"
