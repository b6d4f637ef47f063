"""DDP under torchrun: rank and world from the environment, one process per device."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def init_world(device: str) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World(), torch.device(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return World(rank, world_size, local_rank), torch.device(f"cuda:{local_rank}" if on_cuda else "cpu")


def all_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over all processes (identity for a single one)."""
    if world.distributed:
        dist.all_reduce(values)
    return values


def leave_world(world: World, synchronize: bool = True) -> None:
    """Tear the process group down at the end of a distributed run.

    With ``synchronize`` (a run that finished on this rank) every rank first meets at a barrier: a rank
    tearing gloo down while a peer's last collective is still in flight aborts the peer ("terminate
    called without an active exception"). A rank leaving on an error skips it, so it cannot wait forever.
    """
    if world.distributed and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
