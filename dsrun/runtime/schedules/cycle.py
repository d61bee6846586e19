"""DeepSpeed's OneCycle and LRRangeTest schedules (0.19.8 defaults and formulas, OneCycle's staircase included)."""

from __future__ import annotations

import logging
import math
from typing import Any

from dsrun.runtime.schedules.base import (
    IterationSchedule,
    flag,
    momentum_value,
    non_negative_int,
    non_negative_number,
    per_group_lrs,
    positive_int,
)

log = logging.getLogger(__name__)

# DeepSpeed cycles only β1; β2 is overwritten with this constant in every group, whatever the optimizer had.
ONE_CYCLE_BETA2 = 0.99


class OneCycle(IterationSchedule):
    """One triangular cycle of S = first + second iterations from `cycle_min_lr` up to `cycle_max_lr` and back,
    then a decay phase. Momentum (β1 of optimizers that have `betas`) moves the opposite way.

    Cycle (it < S), with b = it + 1, r = first/S and x = b/S's fractional part: scale = x/r while x <= r, else
    (x - 1)/(r - 1); lr = min + (max - min)·scale and β1 = max_mom - (max_mom - min_mom)·scale.
    A stair count n > 0 for a half-cycle holds the scale on n flat levels, floor(position·n)/n.
    After the cycle, with k = it - S + 1 and decay_step_size > 0: lr = min / (1 + decay_lr_rate·k/decay_step_size) and
    β1 = max_mom·(1 + decay_mom_rate·k/decay_step_size); a zero rate or step size keeps lr at min and β1 at max_mom.
    The constructor sets lr = min and betas = (min_mom, 0.99); get_mom() before the first step reports max_mom.
    """

    def __init__(
        self,
        optimizer: Any,
        cycle_min_lr: float | list[float],
        cycle_max_lr: float | list[float],
        decay_lr_rate: float = 0.0,
        cycle_first_step_size: int = 2000,
        cycle_second_step_size: int | None = None,
        cycle_first_stair_count: int = 0,
        cycle_second_stair_count: int | None = None,
        decay_step_size: int = 0,
        cycle_momentum: bool = True,
        cycle_min_mom: float = 0.8,
        cycle_max_mom: float = 0.9,
        decay_mom_rate: float = 0.0,
        last_batch_iteration: int = -1,
    ) -> None:
        super().__init__(optimizer, last_batch_iteration)
        name = self.name
        self.first_step_size = positive_int(name, "cycle_first_step_size", cycle_first_step_size)
        self.second_step_size = (self.first_step_size if cycle_second_step_size is None
                                 else positive_int(name, "cycle_second_step_size", cycle_second_step_size))
        self.first_stair_count = non_negative_int(name, "cycle_first_stair_count", cycle_first_stair_count)
        self.second_stair_count = (self.first_stair_count if cycle_second_stair_count is None
                                   else non_negative_int(name, "cycle_second_stair_count", cycle_second_stair_count))
        self.decay_step_size = non_negative_int(name, "decay_step_size", decay_step_size)
        self.cycle_size = self.first_step_size + self.second_step_size

        self.min_lrs = per_group_lrs(name, "cycle_min_lr", cycle_min_lr, self.group_count)
        self.max_lrs = per_group_lrs(name, "cycle_max_lr", cycle_max_lr, self.group_count)
        self.decay_lr_rate = non_negative_number(name, "decay_lr_rate", decay_lr_rate)

        self.min_mom = momentum_value(name, "cycle_min_mom", cycle_min_mom)
        self.max_mom = momentum_value(name, "cycle_max_mom", cycle_max_mom)
        self.decay_mom_rate = non_negative_number(name, "decay_mom_rate", decay_mom_rate)
        self.cycle_momentum = flag(name, "cycle_momentum", cycle_momentum)
        if self.cycle_momentum and "betas" not in self.optimizer.defaults:
            log.warning("OneCycle: cycle_momentum is disabled because %s has no betas to cycle",
                        type(self.optimizer).__name__)
            self.cycle_momentum = False
        self._start()

    def _apply(self) -> None:
        super()._apply()
        if self.cycle_momentum:
            # DeepSpeed's constructor writes min_mom, the momentum the first update then uses, while get_mom()
            # reports the cycle formula's value (max_mom): both kept as they are.
            first = [(self.min_mom, ONE_CYCLE_BETA2)] * self.group_count
            moms = first if self.last_batch_iteration == -1 else self.get_mom() or first
            for group, betas in zip(self.optimizer.param_groups, moms, strict=True):
                group["betas"] = betas

    def _in_cycle(self) -> bool:
        return self.last_batch_iteration < self.cycle_size

    def _decay_steps(self) -> int:
        return self.last_batch_iteration - self.cycle_size + 1

    def cycle_scale(self) -> float:
        """0 at the cycle's ends, 1 at its peak; only meaningful while in the cycle."""
        batch = self.last_batch_iteration + 1
        position = batch / self.cycle_size
        fraction = 1.0 + position - math.floor(1.0 + position)
        rise_share = self.first_step_size / self.cycle_size
        scale = fraction / rise_share if fraction <= rise_share else (fraction - 1) / (rise_share - 1)
        # Stairs are counted from whole iterations (multiply, then divide once), not from the float fraction: at a
        # level boundary the fraction can land an ulp short and flooring it would drop a whole stair, even the peak.
        offset = batch % self.cycle_size
        if offset <= self.first_step_size:
            stairs, steps_from_bottom, half = self.first_stair_count, offset, self.first_step_size
        else:
            stairs, steps_from_bottom, half = self.second_stair_count, self.cycle_size - offset, self.second_step_size
        if stairs > 0:
            scale = math.floor(steps_from_bottom * stairs / half) / stairs
        return scale

    def get_lr(self) -> list[float]:
        if self._in_cycle():
            scale = self.cycle_scale()
            return [low + (high - low) * scale for low, high in zip(self.min_lrs, self.max_lrs, strict=True)]
        if self.decay_step_size == 0 or self.decay_lr_rate == 0:
            return list(self.min_lrs)
        divisor = 1 + self.decay_lr_rate * (self._decay_steps() / self.decay_step_size)
        return [low / divisor for low in self.min_lrs]

    def get_mom(self) -> list[tuple[float, float]] | None:
        """(β1, β2) per param group, or None when momentum is not cycled."""
        if not self.cycle_momentum:
            return None
        if self._in_cycle():
            beta1 = self.max_mom - (self.max_mom - self.min_mom) * self.cycle_scale()
        elif self.decay_step_size == 0 or self.decay_mom_rate == 0:
            beta1 = self.max_mom
        else:
            beta1 = self.max_mom * (1 + self.decay_mom_rate * (self._decay_steps() / self.decay_step_size))
        return [(beta1, ONE_CYCLE_BETA2)] * self.group_count


class LRRangeTest(IterationSchedule):
    """lr = min_lr·(1 + step_rate·i), i = (it+1)/step_size, or floor((it+1)/step_size) with the staircase.

    Grows the lr without bound, to find the largest lr that still trains. `lr_range_test_min_lr` takes one number or
    a list with one per param group.
    """

    def __init__(
        self,
        optimizer: Any,
        lr_range_test_min_lr: float | list[float] = 1e-3,
        lr_range_test_step_size: int = 2000,
        lr_range_test_step_rate: float = 1.0,
        lr_range_test_staircase: bool = False,
        last_batch_iteration: int = -1,
    ) -> None:
        super().__init__(optimizer, last_batch_iteration)
        name = self.name
        self.min_lrs = per_group_lrs(name, "lr_range_test_min_lr", lr_range_test_min_lr, self.group_count)
        self.step_size = positive_int(name, "lr_range_test_step_size", lr_range_test_step_size)
        self.step_rate = non_negative_number(name, "lr_range_test_step_rate", lr_range_test_step_rate)
        self.staircase = flag(name, "lr_range_test_staircase", lr_range_test_staircase)
        self._start()

    def get_lr(self) -> list[float]:
        intervals = float(self.last_batch_iteration + 1) / self.step_size
        if self.staircase:
            intervals = math.floor(intervals)
        growth = 1 + self.step_rate * intervals
        return [low * growth for low in self.min_lrs]
