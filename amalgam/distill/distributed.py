"""Running under torchrun: who we are, and the few collective operations the trainer needs.

Single-process runs see a world of one and every function here is a no-op, so the trainer
and the run directory code call them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from amalgam.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistEnv:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group(backend)
        except (RuntimeError, ValueError) as exc:
            raise UserError(
                f"could not join the torchrun process group ({exc}); check the rendezvous flags"
            ) from exc
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank)


def cuda_device_for(device: str, env: DistEnv) -> str:
    """Under torchrun each process drives its own GPU."""
    return f"cuda:{env.local_rank}" if env.active and device.startswith("cuda") else device


def barrier(env: DistEnv) -> None:
    if env.active:
        dist.barrier()


def sum_across(values: list[float], env: DistEnv) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (train loss, correct, seen)."""
    if not env.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def average_gradients(parameters, env: DistEnv) -> None:
    """For trainable helpers outside the DDP-wrapped student (projectors, regressors)."""
    if not env.active:
        return
    for param in parameters:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= env.world_size


def broadcast_from_main(value, env: DistEnv):
    if not env.active:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
