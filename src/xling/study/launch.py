"""Where a study's runs execute: in this process, in a pool of local worker processes (each with
its share of the cores and, with --gpus, its own GPU), or as Ray tasks (with their CPU and GPU
requests). The runner (`runner.run_study`) decides what runs; this module only runs it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..data.parallel import spawn_context
from ..errors import XlingError
from ..model_dims import ModelDims, resolve_model
from ..train.stopping import FORWARDED, HELD_WHILE_STARTING
from .execute import execute_run
from .placement import gpu_count, plan_gpus, ray_resources, trains_on_gpu
from .spec import RunSpec
from .workers import guarded, init_pool_worker, ray_task

CGROUP_ROOT = Path("/sys/fs/cgroup")
RAY_STOP_WAIT = 120  # seconds a stopped study waits for its Ray tasks to end their step and write its checkpoint
RAY_PASSED_VARIABLES = ("XLING_CACHE", "XLING_RUNS", "XLING_STUDIES", "PYTHONPATH")  # to a cluster's tasks


def _cgroup_dirs() -> list[Path]:
    """This process's cgroup v2 directory and its parents up to the mount point (a SLURM job's or a
    systemd unit's limits sit on one of them, a container's on the root); none without cgroup v2."""
    try:
        line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::"))
    except (OSError, StopIteration):
        return []
    here = CGROUP_ROOT / line[3:].strip().lstrip("/")
    return [d for d in (here, *here.parents) if d.is_relative_to(CGROUP_ROOT)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_cpus() -> float | None:
    """The fewest CPUs a cgroup v2 quota on the way up allows (a container's --cpus), or None without one."""
    quotas = []
    for d in _cgroup_dirs():
        quota, _, period = (_read(d / "cpu.max") or "max").partition(" ")
        if quota != "max" and quota.isdigit() and period.strip().isdigit():
            quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def _cgroup_free() -> int | None:
    """The least memory any cgroup v2 limit on the way up leaves free, not counting page cache the
    kernel can take back (inactive files); None without a limit."""
    free = []
    for d in _cgroup_dirs():
        limit, current = _read(d / "memory.max"), _read(d / "memory.current")
        if not (limit and limit.isdigit() and current and current.isdigit()):
            continue
        stat = dict(x.split() for x in (_read(d / "memory.stat") or "").splitlines() if len(x.split()) == 2)
        free.append(int(limit) - int(current) + int(stat.get("inactive_file", 0)))
    return min(free) if free else None


def usable_cores() -> int:
    """The cores this process may run on (a SLURM or taskset allocation, a cgroup's CPU quota), else
    all of them."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def available_memory() -> int | None:
    """Bytes of memory new processes can have without swapping: Linux's MemAvailable, or less where a
    cgroup v2 limit (a container, a SLURM job, a systemd unit) leaves less; None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    limited = _cgroup_free()
    return max(0, free if limited is None else min(free, limited))


def run_dims(spec: RunSpec) -> ModelDims:
    """A run's model, with the largest vocabulary its languages can have (one tokenizer each)."""
    cfg = spec.run_config
    return resolve_model(cfg.model, cfg.tokenizer.vocab_size * len(spec.mixture.names))


def run_memory(spec: RunSpec) -> int:
    """A rough upper estimate of a CPU run's resident memory, in bytes: the PyTorch process (0.5 GiB),
    weights, gradients and Adam's two moments (16 bytes a parameter) and the activations kept for
    backward (~64 bytes per token, layer and width of a micro-batch). Measured peaks on 2026-11-27
    (batch 16 x 128 tokens): cpu-xs 0.40 GB, cpu-m 0.59 GB, mini 0.84 GB; estimated 0.56, 0.79 and 1.04 GB
    (three presets: rough)."""
    cfg, dims = spec.run_config, run_dims(spec)
    tokens = cfg.train.batch_size // cfg.train.grad_accum * dims.seq_len
    return (1 << 29) + 16 * dims.num_parameters() + 64 * tokens * dims.n_layers * dims.d_model


def auto_workers(todo: list[RunSpec]) -> int:
    """How many runs to train at once here: on the CPU one per usable core, at most one per run, and
    no more than half the available memory holds; the cores are shared out among them (one thread
    each when every core has a run). Runs that train on a GPU: one (--gpus places more).

    Measured (README, Performance, "Workers and threads"; `benchmarks/workers.py`): on 2 cores, two
    runs with one thread each train 1.02-1.37x more tokens a second than one run with two threads at
    every CPU preset (short OpenMP spin; two sessions of the same day), and 2x at cpu-xs when OpenMP
    sleeps at once (a busy machine). Machines with more cores were not measured; memory bandwidth may
    matter more there."""
    if not todo:
        return 1
    devices = {s.config["train"]["device"] for s in todo}
    if any(d.startswith("cuda") for d in devices) or ("auto" in devices and gpu_count() > 0):
        return 1
    cores, memory = usable_cores(), available_memory()
    fits = cores if memory is None else memory // 2 // max(run_memory(s) for s in todo)
    return max(1, min(cores, len(todo), fits))


def _interrupt(pool: cf.ProcessPoolExecutor) -> None:
    """Ctrl-C passed on to the pool's workers, as the signal that is never a second press (`stopping.FORWARDED`): a
    worker that had the Ctrl-C itself (from the terminal, or SLURM's SIGTERM) still ends its step with a checkpoint."""
    for process in _processes(pool):
        with contextlib.suppress(OSError):
            os.kill(process.pid, FORWARDED)


def _processes(pool: cf.ProcessPoolExecutor) -> list:
    return list((getattr(pool, "_processes", None) or {}).values())  # the executor's own table: no public way to them


@contextlib.contextmanager
def _ctrl_c_while_stopping(pool: cf.ProcessPoolExecutor):
    """While the pool stops (its workers end their runs: a second or so), a Ctrl-C does not cut the wait
    short: on Python 3.11 an interrupted join can leave the pool's manager thread running while the
    process exits, and the workers then wait forever. The first press meanwhile is only noted (a Ctrl-C
    may arrive twice: `timeout -s INT` sends it to the process and to its group); another kills the
    workers (every file is written atomically: a rerun resumes from the last checkpoint). A press noted
    while nothing else stops the caller is raised afterwards, so it is not lost."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread has Ctrl-C
        yield
        return
    presses = []  # the signals that came

    def on_ctrl_c(signum, frame) -> None:
        presses.append(signum)
        if len(presses) >= 2:
            for process in _processes(pool):
                with contextlib.suppress(OSError):
                    process.kill()

    # and SIGTERM where this process turns it into Ctrl-C (the CLI does: `timeout` and SLURM signal the runner too)
    stops = [signal.SIGINT] + [signal.SIGTERM] * callable(signal.getsignal(signal.SIGTERM))
    previous = {s: signal.signal(s, on_ctrl_c) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if presses and sys.exc_info()[0] is None:  # (in an `except` block, its exception goes on instead)
        first = previous[presses[0]]  # its own handler: SIGTERM's under `xling` raises Terminated (exit status 143)
        if callable(first):
            first(presses[0], None)
        raise KeyboardInterrupt


@contextlib.contextmanager
def _ctrl_c_held_back():
    """Block SIGINT (and FORWARDED) in this thread meanwhile: a process started now inherits the block, so a Ctrl-C
    waits until it has installed its handler (`workers.init_pool_worker`) instead of killing it
    with a traceback from its imports; here it is delivered when the block ends. (POSIX only.)"""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_WHILE_STARTING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _start_ray(ray, num_cpus: int) -> None:
    """Connect to RAY_ADDRESS's cluster, or start a Ray on this machine with `num_cpus`, keeping this process's SIGTERM
    handler (Ray's own dumps a stack trace: a scheduler's stop must stay a stop, with its checkpoints)."""
    address = os.environ.get("RAY_ADDRESS")
    # a cluster's workers have the environment of `ray start`: xling's own variables (cache, studies, the xling
    # imported) are the driver's, as absolute paths; a job submitted with a runtime env keeps its own (Ray refuses to
    # merge two)
    passed = {k: os.pathsep.join(str(Path(p).absolute()) if p else p for p in os.environ[k].split(os.pathsep))
              for k in RAY_PASSED_VARIABLES if k in os.environ}
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        passed = {}
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({"runtime_env": {"env_vars": passed}} if passed else {}),
                 **({} if address else {"num_cpus": num_cpus}))
    except ConnectionError as exc:  # (after Ray's own retries and log lines)
        if not address:
            raise
        raise XlingError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({str(exc).splitlines()[0]}): start "
                         "it (ray start) or fix RAY_ADDRESS; unset, a Ray of this machine is started") from None
    finally:
        if callable(sigterm) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)


@dataclass(frozen=True)
class Launch:
    """How runs are executed: `workers` at a time, `threads` each, on `engine`.

    gpus: the CUDA_VISIBLE_DEVICES value of each local worker (None: workers inherit this
    process's GPUs); on Ray, `gpus_asked` makes runs whose device is auto ask for 1 / runs_per_gpu
    of a GPU (runs whose device is cuda always ask)."""

    engine: str = "local"
    workers: int = 1
    threads: int = 1
    gpus: tuple[str, ...] | None = None
    gpus_asked: bool = False
    runs_per_gpu: int = 1
    loggers: tuple[str, ...] = ()
    progress: bool = False
    then: tuple = ()  # (fn, *args): run by the worker after each run it completes (`execute_run`)
    in_worker_process: bool = False  # even one worker trains in a worker process, with exactly `threads` threads

    @classmethod
    def plan(cls, engine: str = "local", workers: int | None = None, gpus: str | tuple[int, ...] | None = None,
             runs_per_gpu: int = 1, loggers: tuple[str, ...] = (), progress: bool = False) -> Launch:
        """Check the request and work out the workers (one error line for an impossible one)."""
        if engine not in ("local", "ray"):
            raise XlingError(f"engine (--engine) must be local or ray, got '{engine}'")
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise XlingError(f"--workers (from Python: workers=) must be a whole number >= 1 or 'auto', got {workers!r}")
        places = None
        if engine == "ray":
            if gpus not in (None, "auto"):
                raise XlingError("with --engine ray, Ray places runs on GPUs: use --gpus auto (and "
                                 "CUDA_VISIBLE_DEVICES to keep a local Ray to some GPUs)")
            if gpus and not os.environ.get("RAY_ADDRESS"):  # a local Ray: its GPUs are ours
                workers = len(plan_gpus(gpus, workers, runs_per_gpu))
            elif runs_per_gpu != 1 and not gpus:
                plan_gpus(None, workers, runs_per_gpu)  # the error for --runs-per-gpu without --gpus
        else:
            places = plan_gpus(gpus, workers, runs_per_gpu)
            if places is not None:
                workers = len(places)
        workers = workers or 1
        return cls(engine, workers, max(1, usable_cores() // workers), tuple(places) if places else None,
                   gpus is not None, runs_per_gpu, tuple(loggers), progress)

    def describe(self) -> str:
        """E.g. '2 workers, local, GPUs 0,1' (for the runner's first line)."""
        where = f", GPUs {','.join(dict.fromkeys(self.gpus))}" if self.gpus else ""
        if self.engine == "ray" and self.gpus_asked:
            where = f", {self.runs_per_gpu} run(s) per GPU"
        return f"{self.workers} worker{'s' * (self.workers != 1)}, {self.engine}{where}"

    def execute(self, todo: list[RunSpec], root: Path) -> Iterator[dict]:
        """Yield execute_run results as runs finish."""
        if self.engine == "ray":
            yield from self._ray(todo, root)
        elif self.workers == 1 and self.gpus is None and not self.in_worker_process:  # here: CUDA may be set up here
            for spec in todo:
                yield execute_run(spec.to_json(), str(root), self.progress, self.loggers, self.then)
        else:
            yield from self._pool(todo, root)

    def pool(self) -> tuple[cf.ProcessPoolExecutor, object]:
        """The local worker processes: spawned, each set up by `workers.init_pool_worker` with its
        threads and, with GPUs, the next CUDA_VISIBLE_DEVICES value from a queue (one per worker);
        and the Event that, once set, keeps the pool's queued tasks from starting."""
        ctx = spawn_context()
        places = None
        if self.gpus:
            places = ctx.Queue()
            for gpu in self.gpus:
                places.put(gpu)
        stop = ctx.Event()
        return cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_pool_worker,
                                      initargs=(self.threads, places, stop)), stop

    def _pool(self, todo: list[RunSpec], root: Path) -> Iterator[dict]:
        progress = self.progress and self.workers == 1  # (one bar on the terminal; several would garble it)
        yield from self.run_each(execute_run, todo, str(root), progress, self.loggers, self.then)

    def run_each(self, fn, todo: list[RunSpec], *args) -> Iterator:
        """fn(spec.to_json(), *args) for every run in the local worker processes; the results as they
        finish. `fn` must be a module-level function (the workers import it by name). Stopped early
        (Ctrl-C, an error), the runs still queued do not start; the running ones end as Ctrl-C ends them.
        Consume it inside `contextlib.closing`: a Ctrl-C that lands in the caller's own code between two
        results then shuts the pool down at once (left to the garbage collector, the pool's shutdown can
        meet multiprocessing's exit handlers, which have closed its queues: the workers wait forever)."""
        pool, stop = self.pool()
        try:
            with _ctrl_c_held_back():  # the workers start now, and must not die of a Ctrl-C while they import
                futures = [pool.submit(guarded, fn, spec.to_json(), *args) for spec in todo]
            for future in cf.as_completed(futures):
                result = future.result()
                if result is not None:  # None: a task its worker did not start after Ctrl-C
                    yield result
        except BaseException as exc:
            with _ctrl_c_while_stopping(pool):
                # The tasks queued in the pool then return at once. (Not Future.cancel: a pool broken by a
                # kill in `_ctrl_c_while_stopping` then fails on the cancelled futures and leaks semaphores.)
                stop.set()
                # Stopped by a Ctrl-C, here or in the caller (GeneratorExit from `closing`, which an error
                # there sends too), perhaps to this process only (kill -INT, a notebook's interrupt): the
                # running runs stop as well
                if isinstance(exc, (KeyboardInterrupt, GeneratorExit, BrokenPipeError)):
                    _interrupt(pool)
                pool.shutdown(wait=True)
            if isinstance(exc, cf.process.BrokenProcessPool):
                raise XlingError("a worker process died (out of memory? killed, or sent SIGTERM without its runner? "
                                 "or, from Python, a script whose top level is not under `if __name__ == "
                                 "\"__main__\":`); run the study again to continue, perhaps with fewer workers") from None
            raise
        with _ctrl_c_while_stopping(pool):
            pool.shutdown(wait=True)

    def _ray(self, todo: list[RunSpec], root: Path) -> Iterator[dict]:
        """Each run is one Ray task. With RAY_ADDRESS set, tasks go to that cluster (ROOT must be shared)."""
        try:
            import ray
        except ImportError:
            raise XlingError("--engine ray needs Ray: pip install 'xling[ray]' (or use the default --engine local)") from None
        if not ray.is_initialized():
            _start_ray(ray, self.workers * self.threads)
        task = ray.remote(ray_task)
        # A task asks for this machine's share of threads; a cluster whose largest node has fewer CPUs could never
        # place it (Ray waits for ever): then each run takes that node's CPUs.
        largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
        threads = min(self.threads, int(largest)) if largest >= 1 else self.threads
        pending = []
        try:
            for spec in todo:
                request = ray_resources(spec.config, threads, self.gpus_asked, self.runs_per_gpu)
                on_gpu = trains_on_gpu(spec.config, self.gpus_asked)
                pending.append(task.options(**request).remote(spec.to_json(), str(root.resolve()), threads, on_gpu,
                                                              self.loggers, os.getcwd(), self.then))
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    result = ray.get(done[0])
                except XlingError as exc:  # as Ray raises a task's: its text holds the task's traceback
                    raise XlingError(str(getattr(exc, "cause", exc))) from None
                yield result
        except BaseException:  # Ctrl-C, SIGTERM, a closed output, an error: the running runs stop as they would
            # here, at the end of their step with a checkpoint (Ray raises Ctrl-C in the task); the queued ones never
            # start. Else they died with this driver, as by kill -9. (Ray gone too: the first error is the one told.)
            with contextlib.suppress(Exception):
                for ref in pending:
                    ray.cancel(ref)
                ray.wait(pending, num_returns=len(pending), timeout=RAY_STOP_WAIT)  # (a second Ctrl-C: at once)
            raise
