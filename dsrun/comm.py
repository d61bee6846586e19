"""`dsrun.comm`: the collective helpers DeepSpeed scripts call as `deepspeed.comm`, on torch.distributed."""

from __future__ import annotations

import os

import torch.distributed as dist
from torch.distributed import (  # noqa: F401 - re-exported under DeepSpeed's names
    ReduceOp,
    all_gather,
    all_gather_into_tensor,
    all_reduce,
    all_to_all_single,
    broadcast,
    get_backend,
    get_global_rank,
    irecv,
    isend,
    new_group,
    recv,
    reduce,
    reduce_scatter_tensor,
    send,
)

from dsrun.runtime.distributed import init_distributed  # noqa: F401 - re-exported


def is_initialized() -> bool:
    return dist.is_initialized()


def get_rank(group=None) -> int:
    return dist.get_rank(group) if dist.is_initialized() else 0


def get_world_size(group=None) -> int:
    return dist.get_world_size(group) if dist.is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier(group=None) -> None:
    if dist.is_initialized():
        dist.barrier(group)
