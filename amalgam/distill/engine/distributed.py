"""Running under torchrun: who we are, and the few collective operations the trainer needs.

Runs not started by torchrun join no group and every function here is a no-op, so the
trainer and the run directory code call them unconditionally.
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
    joined: bool = False  # in a torchrun process group (a world of one included)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.joined


def backend_for(device: str) -> str:
    """gloo on CPU; on CUDA, nccl for CUDA tensors (DDP's gradients) and gloo for the CPU
    tensors and pickled objects that the run's bookkeeping exchanges (`sum_across`,
    `broadcast_from_main`, `barrier`), which an nccl-only group refuses."""
    return "cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo"


def launched_by_torchrun() -> bool:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world > 1 or "TORCHELASTIC_RUN_ID" in os.environ  # torchrun sets it, even for one process


def init_distributed(device: str) -> DistEnv:
    """Join torchrun's process group, even a world of one (`--nproc-per-node 1` still runs
    the DDP code path, which is how a machine with one GPU checks the nccl path)."""
    if not launched_by_torchrun():
        return DistEnv()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.startswith("cuda"):
            # nccl and object collectives use the current device: make it this process's GPU
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group(backend_for(device))
        except (RuntimeError, ValueError) as exc:
            raise UserError(
                f"could not join the torchrun process group ({exc}); check the rendezvous flags"
            ) from exc
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, joined=True)


def cuda_device_for(device: str, env: DistEnv) -> str:
    """Under torchrun each process drives its own GPU."""
    return f"cuda:{env.local_rank}" if env.active and device.startswith("cuda") else device


def barrier(env: DistEnv) -> None:
    if env.active:
        dist.barrier()


def sum_across(values: list[float], env: DistEnv) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (train loss, correct, seen).

    A CPU tensor: the group has gloo for CPU tensors on every device (see `backend_for`)."""
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


def gather_from_all(value, env: DistEnv) -> list:
    """Every rank's `value` (picklable, small), in rank order, on every rank; [value] alone.

    Object collectives travel over gloo even on CUDA (see `backend_for`)."""
    if not env.active:
        return [value]
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, value)
    return gathered
