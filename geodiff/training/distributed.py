"""Single-process or ``torchrun`` data-parallel training: process group set-up and small collectives.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) :func:`setup` joins the process group from the
environment variables (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) with backend
``gloo`` on CPU and ``nccl`` on GPU, and places each rank on ``cuda:<LOCAL_RANK>`` when training on GPU. A group
created here stays up for later calls (a script may train several times) and is destroyed when the interpreter
exits; a group the caller created is used as it is. Without those variables everything runs in one process and the
collectives are no-ops.

Example
-------
>>> from geodiff.training.distributed import setup
>>> info = setup("cpu")  # no WORLD_SIZE in the environment: a single process
>>> info.rank, info.world_size, info.is_main
(0, 1, True)
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from geodiff.errors import ConfigError

__all__ = ["DistInfo", "setup", "barrier", "all_reduce_sum"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` on ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that writes checkpoints and shows progress)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from err


def setup(device: str | torch.device = "cpu") -> DistInfo:
    """Join (or reuse) the process group when ``WORLD_SIZE > 1``; returns this process's :class:`DistInfo`."""
    device = torch.device(device)
    world_size = _env_int("WORLD_SIZE", 1)
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    elif world_size > 1:
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        atexit.register(_destroy)
        rank = dist.get_rank()
    else:
        rank = 0
    if device.type == "cuda" and world_size > 1 and device.index is None:
        device = torch.device("cuda", _env_int("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank=rank, world_size=world_size, device=device)


def _destroy() -> None:
    """At exit: free dead DDP reducers while the group is alive, wait for every rank, then destroy the group.

    Destroying the group while another rank still talks to it, or while a DDP reducer's threads are alive, makes
    gloo abort the process ("terminate called without an active exception")."""
    if dist.is_initialized():
        gc.collect()
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_sum(value: Tensor, info: DistInfo) -> Tensor:
    """Sum of ``value`` over ranks (a new tensor; ``value`` itself in a single process)."""
    if not info.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total
