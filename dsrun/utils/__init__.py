"""`dsrun.utils`: the helpers DeepSpeed scripts import from `deepspeed.utils` (no torch at import)."""

from __future__ import annotations

from dsrun.utils.logging import log_dist, logger
from dsrun.utils.repeating_loader import RepeatingLoader

__all__ = ["RepeatingLoader", "log_dist", "logger"]


def __getattr__(name: str) -> object:
    """`dsrun.utils.groups` (DeepSpeed's deepspeed.utils.groups: the expert-parallel groups), loaded when asked for,
    as it needs torch."""
    if name == "groups":
        from dsrun.moe import groups

        return groups
    raise AttributeError(f"module 'dsrun.utils' has no attribute {name!r}")
