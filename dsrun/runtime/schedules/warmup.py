"""DeepSpeed's warmup schedules: WarmupLR, WarmupDecayLR and WarmupCosineLR (0.19.8 defaults and formulas).

All three warm up over W = max(2, warmup_num_steps) iterations, on a log curve ln(it+1)/ln(W) or a linear one it/W.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from dsrun.runtime.schedules.base import (
    IterationSchedule,
    check_warmup_type,
    non_negative_number,
    per_group_lrs,
    positive_int,
    read_lr,
    warmup_fraction,
)

log = logging.getLogger(__name__)


class WarmupLR(IterationSchedule):
    """lr = min + (max - min)·γ, γ rising from 0 to 1 over W iterations and then staying at 1.

    `warmup_max_lr=None` means each param group's own lr at construction (0.19.8; 0.16.5 used 0.001).
    `warmup_min_lr` and `warmup_max_lr` take one number or a list with one per param group.
    """

    def __init__(
        self,
        optimizer: Any,
        warmup_min_lr: float | list[float] = 0.0,
        warmup_max_lr: float | list[float] | None = None,
        warmup_num_steps: int = 1000,
        warmup_type: str = "log",
        last_batch_iteration: int = -1,
    ) -> None:
        super().__init__(optimizer, last_batch_iteration)
        name = self.name
        self.min_lrs = per_group_lrs(name, "warmup_min_lr", warmup_min_lr, self.group_count)
        if warmup_max_lr is None:
            self.max_lrs = [read_lr(group) for group in self.optimizer.param_groups]
        else:
            self.max_lrs = per_group_lrs(name, "warmup_max_lr", warmup_max_lr, self.group_count)
        self.warmup_num_steps = max(2, positive_int(name, "warmup_num_steps", warmup_num_steps))
        self.warmup_type = check_warmup_type(name, warmup_type)
        self._start()

    def _gamma(self, iteration: int) -> float:
        if iteration < self.warmup_num_steps:
            return warmup_fraction(iteration, self.warmup_num_steps, self.warmup_type)
        return 1.0

    def get_lr(self) -> list[float]:
        if self.last_batch_iteration < 0:
            return list(self.min_lrs)
        gamma = self._gamma(self.last_batch_iteration)
        return [low + (high - low) * gamma for low, high in zip(self.min_lrs, self.max_lrs, strict=True)]


class WarmupDecayLR(WarmupLR):
    """WarmupLR's warmup, then a linear decay back to `warmup_min_lr` at iteration `total_num_steps`:
    γ = max(0, (total - it) / max(1, total - W)). Here `warmup_max_lr` defaults to 0.001, as in DeepSpeed."""

    def __init__(
        self,
        optimizer: Any,
        total_num_steps: int,
        warmup_min_lr: float | list[float] = 0.0,
        warmup_max_lr: float | list[float] | None = 0.001,
        warmup_num_steps: int = 1000,
        warmup_type: str = "log",
        last_batch_iteration: int = -1,
    ) -> None:
        # Set before WarmupLR's constructor, which already computes the first lr.
        self.total_num_steps = positive_int(self.name, "total_num_steps", total_num_steps)
        super().__init__(optimizer, warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type, last_batch_iteration)
        if self.total_num_steps < self.warmup_num_steps:
            log.warning("WarmupDecayLR: total_num_steps %d is less than warmup_num_steps %d",
                        self.total_num_steps, self.warmup_num_steps)

    def _gamma(self, iteration: int) -> float:
        if iteration < self.warmup_num_steps:
            return warmup_fraction(iteration, self.warmup_num_steps, self.warmup_type)
        decay_steps = max(1.0, self.total_num_steps - self.warmup_num_steps)
        return max(0.0, float(self.total_num_steps - iteration) / float(decay_steps))


class WarmupCosineLR(IterationSchedule):
    """lr = base_lr · ratio, base_lr being each group's lr at construction.

    Warmup (it < W): ratio = warmup_min_ratio + (1 - warmup_min_ratio)·g. After it, with the progress
    p = min(1, (it - W + 1) / max(1, total - W)): ratio = max(0, cos_min_ratio + (1 - cos_min_ratio)(1 + cos πp)/2),
    so the lr stays at the floor past `total_num_steps` (0.19.8's clamp). Before the first step the lr is 0.
    """

    def __init__(
        self,
        optimizer: Any,
        total_num_steps: int,
        warmup_min_ratio: float = 0.0,
        warmup_num_steps: int = 1000,
        cos_min_ratio: float = 0.0001,
        warmup_type: str = "log",
        last_batch_iteration: int = -1,
    ) -> None:
        super().__init__(optimizer, last_batch_iteration)
        name = self.name
        self.total_num_steps = positive_int(name, "total_num_steps", total_num_steps)
        self.warmup_min_ratio = non_negative_number(name, "warmup_min_ratio", warmup_min_ratio)
        self.warmup_num_steps = max(2, positive_int(name, "warmup_num_steps", warmup_num_steps))
        self.cos_min_ratio = non_negative_number(name, "cos_min_ratio", cos_min_ratio)
        self.warmup_type = check_warmup_type(name, warmup_type)
        if self.total_num_steps < self.warmup_num_steps:
            log.warning("WarmupCosineLR: total_num_steps %d is less than warmup_num_steps %d",
                        self.total_num_steps, self.warmup_num_steps)
        self.base_lrs = [read_lr(group) for group in self.optimizer.param_groups]
        self._start()

    def lr_ratio(self) -> float:
        iteration = self.last_batch_iteration
        if iteration < 0:
            return 0.0
        if iteration < self.warmup_num_steps:
            rise = warmup_fraction(iteration, self.warmup_num_steps, self.warmup_type)
            return self.warmup_min_ratio + rise * (1.0 - self.warmup_min_ratio)
        steps_into_decay = iteration - self.warmup_num_steps + 1
        decay_steps = max(1, self.total_num_steps - self.warmup_num_steps)
        progress = min(1.0, steps_into_decay / decay_steps)
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return max(0.0, self.cos_min_ratio + (1.0 - self.cos_min_ratio) * cosine)

    def get_lr(self) -> list[float]:
        ratio = self.lr_ratio()
        return [base_lr * ratio for base_lr in self.base_lrs]
