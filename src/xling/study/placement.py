"""Which GPU each study worker trains on (`xling study run --gpus 0,1 --runs-per-gpu 2`).

Local workers each get their own CUDA_VISIBLE_DEVICES (one GPU, which the worker then calls
cuda:0); Ray tasks ask Ray for `num_gpus` (a fraction when several runs share a GPU) and Ray
sets CUDA_VISIBLE_DEVICES for them. Nothing here initialises CUDA in a worker.
"""

from __future__ import annotations

import os

from ..errors import XlingError

GPU_VARIABLE = "XLING_WORKER_GPU"  # the GPU a study worker was given (set by workers.set_gpu, recorded in study.json)


def parse_gpus(text: str) -> str | tuple[int, ...]:
    """`--gpus`: "auto" (every visible GPU) or a list of GPU indices "0,1,3"."""
    text = text.strip()
    if text == "auto":
        return "auto"
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise XlingError(f"--gpus takes auto or GPU numbers such as 0,1,2,3, got '{text}'") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise XlingError(f"--gpus takes distinct GPU numbers from 0 up, such as 0,1,2,3, got '{text}'")
    return ids


def gpu_count() -> int:
    """How many CUDA GPUs this process sees (0 with a CPU build of PyTorch)."""
    import torch

    return torch.cuda.device_count()


def visible_gpus() -> list[str]:
    """The GPUs this process sees, as the values a worker's CUDA_VISIBLE_DEVICES takes.

    Under a CUDA_VISIBLE_DEVICES of our own (SLURM sets one), GPU i is its i-th entry, which may
    be a number or a UUID; otherwise it is i.
    """
    n = gpu_count()
    inherited = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return inherited[:n] if inherited else [str(i) for i in range(n)]


def plan_gpus(gpus: str | tuple[int, ...] | None, workers: int | None, runs_per_gpu: int = 1) -> list[str] | None:
    """One CUDA_VISIBLE_DEVICES value per local worker, or None when --gpus was not given.

    Workers go round the chosen GPUs (worker i on GPU i mod n), at most `runs_per_gpu` on each;
    `workers` None means one per place (GPUs x runs_per_gpu). An impossible request is one error line.
    """
    if runs_per_gpu < 1:
        raise XlingError(f"--runs-per-gpu must be >= 1, got {runs_per_gpu}")
    if gpus is None:
        if runs_per_gpu != 1:
            raise XlingError("--runs-per-gpu needs --gpus (auto or GPU numbers such as 0,1)")
        return None
    chosen = _choose(gpus)
    places = [chosen[i % len(chosen)] for i in range(len(chosen) * runs_per_gpu)]
    workers = len(places) if workers is None else workers
    if workers > len(places):
        raise XlingError(f"--workers {workers} is more than {len(chosen)} GPU(s) x --runs-per-gpu {runs_per_gpu} "
                         f"allow: leave --workers out (one worker per place) or raise --runs-per-gpu")
    return places[:workers]


def _choose(gpus: str | tuple[int, ...]) -> list[str]:
    asked = "auto" if gpus == "auto" else ",".join(map(str, gpus))
    visible = visible_gpus()
    if not visible:
        why = "PyTorch sees no CUDA GPU here" + (" (a CPU build of PyTorch?)" if _cpu_build() else "")
        raise XlingError(f"--gpus {asked}: {why}: leave --gpus out to train on the CPU, or install the CUDA build "
                         "of PyTorch on a GPU machine")
    if gpus == "auto":
        return visible
    missing = [i for i in gpus if i >= len(visible)]
    if missing:
        raise XlingError(f"--gpus {asked}: there is no GPU {missing[0]}; this process sees {len(visible)} "
                         f"(0-{len(visible) - 1}; CUDA_VISIBLE_DEVICES renumbers them)")
    return [visible[i] for i in gpus]


def _cpu_build() -> bool:
    import torch

    return torch.version.cuda is None


def trains_on_gpu(config: dict, gpus_asked: bool) -> bool:
    """Whether a run trains on a GPU: its train.device is cuda, or auto and --gpus was given."""
    device = config["train"]["device"]
    return device.startswith("cuda") or (device == "auto" and gpus_asked)


def ray_resources(config: dict, threads: int, gpus_asked: bool, runs_per_gpu: int = 1) -> dict:
    """The resources a run's Ray task asks for: its threads as CPUs, and 1 / runs_per_gpu of a GPU
    when it trains on one."""
    request: dict = {"num_cpus": threads}
    if trains_on_gpu(config, gpus_asked):
        request["num_gpus"] = 1 / runs_per_gpu
    return request
