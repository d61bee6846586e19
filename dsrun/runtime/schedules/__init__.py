"""DeepSpeed's LR schedules (WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest) and torch's, built from
the config's `scheduler` section. Also the module DeepSpeed scripts import the classes from
(`from deepspeed.runtime.lr_schedules import WarmupLR`, through dsrun's alias)."""

from dsrun.runtime.schedules.build import build_scheduler
from dsrun.runtime.schedules.cycle import LRRangeTest, OneCycle
from dsrun.runtime.schedules.warmup import WarmupCosineLR, WarmupDecayLR, WarmupLR

__all__ = ["LRRangeTest", "OneCycle", "WarmupCosineLR", "WarmupDecayLR", "WarmupLR", "build_scheduler"]
