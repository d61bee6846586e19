"""`dsrun.comm`: the collective helpers DeepSpeed scripts call as `deepspeed.comm`, on torch.distributed."""

from __future__ import annotations

import os

import torch.distributed as dist
from torch.distributed import ReduceOp, all_gather, all_reduce, broadcast, reduce  # noqa: F401 - re-exported

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
