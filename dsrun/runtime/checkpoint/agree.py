"""Every rank of a save must name the same directory and tag.

Real scripts build them per rank (HelloDeepSpeed puts a timestamp in the directory; ranks that straddle a second get
two names). Rank 0 alone publishes the checkpoint, so a rank writing elsewhere would leave a `latest` that names an
incomplete checkpoint. Directories that differ stop the save on every rank before anything is written; tags that
differ follow checkpoint.tag_validation as in DeepSpeed: "Fail" raises, "Warn" (the default) says so and uses rank
0's tag, "Ignore" uses rank 0's tag silently.
"""

from __future__ import annotations

import os

import torch.distributed as dist

from dsrun.console import say
from dsrun.errors import UsageError


class TagMismatchError(AssertionError):
    """Ranks passed different tags with tag_validation "Fail" (DeepSpeed raises an AssertionError here)."""


def _first_difference(values: list[str]) -> tuple[int, str] | None:
    return next(((rank, value) for rank, value in enumerate(values) if value != values[0]), None)


def agree_on_target(save_dir, tag: str, tag_validation: str) -> tuple[str, str]:
    """(save_dir, tag) as every rank will use them; raises the same error on every rank when they cannot agree."""
    mine = (os.path.normpath(os.fspath(save_dir)), tag)
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return mine
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    directories = [d for d, _ in everyone]
    tags = [t for _, t in everyone]
    other = _first_difference(directories)
    if other is not None:
        rank, directory = other
        raise UsageError(f"save_checkpoint was given different directories: rank 0 {directories[0]}, rank {rank}"
                         f" {directory}; pass the same save_dir on every rank (build a per-run name on rank 0 and"
                         " broadcast it, e.g. with torch.distributed.broadcast_object_list)")
    other = _first_difference(tags)
    if other is not None:
        rank, different = other
        problem = f"save_checkpoint was given different tags: rank 0 {tags[0]!r}, rank {rank} {different!r}"
        mode = tag_validation.lower()
        if mode == "fail":
            raise TagMismatchError(f"{problem} (checkpoint.tag_validation is \"Fail\")")
        if mode == "warn" and dist.get_rank() == 0:
            say(f"warning: {problem}; using rank 0's tag (set checkpoint.tag_validation to \"Fail\" to stop instead)")
    return directories[0], tags[0]
