"""Make sure every rank takes part in a checkpoint call, instead of hanging in a collective forever.

A script that saves under `if rank == 0:` is the classic mistake; DeepSpeed then hangs. Each rank checks in on the
process group's store and waits, with a deadline, for all the others.
"""

from __future__ import annotations

import os
import time

import torch.distributed as dist

DEFAULT_TIMEOUT_S = 300.0


def all_ranks_arrive(what: str, sequence: int) -> None:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    from torch.distributed.distributed_c10d import _get_default_store  # the only handle on the job's store

    store = _get_default_store()
    world = dist.get_world_size()
    key = f"dsrun/{what}/{sequence}"
    store.add(key, 1)
    timeout = float(os.environ.get("DSRUN_CHECKPOINT_SYNC_TIMEOUT", DEFAULT_TIMEOUT_S))
    deadline = time.monotonic() + timeout
    pause = 0.0005  # ranks usually arrive within milliseconds of each other: look often first, then back off
    while (arrived := store.add(key, 0)) < world:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"engine.{what}() was called on {arrived} of {world} ranks within {timeout:g} s: every rank must call"
                f" it (call it outside any `if rank == 0:` block)"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
