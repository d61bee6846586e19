"""`dsrun.runtime.lr_schedules`: DeepSpeed's LR schedule classes under the module name DeepSpeed scripts import them
from (`from deepspeed.runtime.lr_schedules import WarmupLR`)."""

from __future__ import annotations

from dsrun.runtime.cycle_schedules import LRRangeTest, OneCycle
from dsrun.runtime.warmup_schedules import WarmupCosineLR, WarmupDecayLR, WarmupLR

__all__ = ["LRRangeTest", "OneCycle", "WarmupCosineLR", "WarmupDecayLR", "WarmupLR"]
