"""Data-parallel training across processes (`torchrun`): who am I, and the few collectives we need.

`torchrun --nproc_per_node N -m xling train CONFIG` starts N processes with RANK, WORLD_SIZE
and LOCAL_RANK set. Each process trains a replica on its share of every step's rows (the data
stream is a pure function of the row index, so no data is sent around), DDP averages the
gradients, and only rank 0 writes the run directory. Without WORLD_SIZE (or with 1), every
function here is a no-op for a single process.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import XlingError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """This process's place in a torchrun launch (a single process when not launched by torchrun)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise XlingError(f"malformed torchrun environment (RANK / WORLD_SIZE / LOCAL_RANK): {exc}") from None
    return World(rank, size, local)


def init(world: World, device: torch.device) -> None:
    """Join the process group (NCCL between GPUs, gloo on CPU); idempotent."""
    if world.active and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


@contextlib.contextmanager
def main_first(world: World):
    """Rank 0 runs the block first (e.g. building tokenizer and token caches), then the others."""
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)


def from_main(world: World, value, device: torch.device):
    """Rank 0's `value` (something small: a decision) on every process; every process must call it."""
    if not world.active:
        return value
    box = [value]  # (pickled between this launch's own processes: nothing received from elsewhere)
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def mean_across(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over all processes (a copy; the input is unchanged)."""
    if not world.active:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return out / world.size


def any_across(world: World, flag: bool, device: torch.device) -> bool:
    """Whether `flag` is true in any process; every process must call it."""
    if not world.active:
        return flag
    return bool(mean_across(world, torch.tensor([float(flag)], device=device)).item() > 0)


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The DDP wrapper that averages gradients during backward (the model itself when alone)."""
    if not world.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
