"""`dsrun.utils`: the helpers DeepSpeed scripts import from `deepspeed.utils` (no torch at import)."""

from __future__ import annotations

from dsrun.utils.logging import log_dist, logger
from dsrun.utils.repeating_loader import RepeatingLoader

__all__ = ["RepeatingLoader", "log_dist", "logger"]
