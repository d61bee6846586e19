"""What DeepSpeed's five LR schedules share: the iteration counter, writing the lr into the optimizer, state, checks.

A schedule is a pure function of `last_batch_iteration`; everything else here is bookkeeping around it. The value
checks raise UsageError because every parameter a schedule takes comes from the user's `scheduler.params`.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping, Sequence

import torch

from dsrun.errors import UsageError

WARMUP_TYPES = ("log", "linear")


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer itself, also when it arrives inside a wrapper that keeps it as `.optimizer`."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        return inner
    raise TypeError(f"{type(optimizer).__name__} is neither a torch.optim.Optimizer nor wraps one as .optimizer")


def write_lr(group: dict[str, Any], lr: float) -> None:
    # A tensor lr (capturable / compiled optimizers) is read by captured graphs, so it must change in place.
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def read_lr(group: Mapping[str, Any]) -> float:
    return float(group["lr"])


def warmup_fraction(iteration: int, warmup_steps: int, warmup_type: str) -> float:
    """How far (0..1) warmup has come at `iteration`, for iteration in [0, warmup_steps).

    The operations and their order are DeepSpeed's (the reciprocal of ln W, then a product), so a run resumed from
    a DeepSpeed checkpoint sees bit-identical learning rates.
    """
    if warmup_type == "log":
        return (1.0 / math.log(warmup_steps)) * math.log(iteration + 1)
    return iteration / warmup_steps


class IterationSchedule:
    """Base of the DeepSpeed schedules. A subclass sets its parameters, then calls `_start()`; it provides
    `get_lr()`, the per-group lrs for the current `last_batch_iteration` (-1 means "before the first step")."""

    def __init__(self, optimizer: Any, last_batch_iteration: int) -> None:
        self.optimizer = unwrap_optimizer(optimizer)
        self.last_batch_iteration = check_iteration(self.name, last_batch_iteration)
        self._last_lr: list[float] = []

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def group_count(self) -> int:
        return len(self.optimizer.param_groups)

    def get_lr(self) -> list[float]:
        """Each param group's lr at `last_batch_iteration` (the schedule itself)."""
        raise NotImplementedError

    def _start(self) -> None:
        # A fresh schedule sets the lr the first update uses; a resumed one (iteration >= 0) leaves the restored
        # optimizer's lr alone, as DeepSpeed does.
        if self.last_batch_iteration == -1:
            self._apply()
        else:
            self._last_lr = [read_lr(group) for group in self.optimizer.param_groups]

    def _apply(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            write_lr(group, lr)
        self._last_lr = [read_lr(group) for group in self.optimizer.param_groups]

    def step(self, last_batch_iteration: int | None = None) -> None:
        """Advance one iteration (or jump to `last_batch_iteration`) and write the new lr into the optimizer."""
        if last_batch_iteration is None:
            last_batch_iteration = self.last_batch_iteration + 1
        self.last_batch_iteration = check_iteration(self.name, last_batch_iteration)
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The lrs this schedule last wrote (or found, when constructed mid-run), one per param group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, int]:
        return {"last_batch_iteration": self.last_batch_iteration}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the saved iteration. The lr for that iteration is written back at once, so the next update
        uses the same lr as in the saved run even if the optimizer's own state is not restored."""
        self.last_batch_iteration = check_iteration(self.name, state["last_batch_iteration"])
        self._apply()


# ---- value checks: each names the schedule and the parameter, and says what a valid value looks like ----


def _bad(schedule: str, param: str, wanted: str, value: Any, hint: str = "") -> UsageError:
    return UsageError(f"scheduler {schedule}: set params.{param} to {wanted} (got {value!r}){hint}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_iteration(schedule: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise _bad(schedule, "last_batch_iteration", "an integer >= -1 (-1 starts from the beginning)", value)
    return value


def positive_int(schedule: str, param: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(schedule, param, "a positive integer", value)
    return value


def non_negative_int(schedule: str, param: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(schedule, param, "an integer >= 0", value)
    return value


def non_negative_number(schedule: str, param: str, value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise _bad(schedule, param, "a number >= 0", value)
    return value


def momentum_value(schedule: str, param: str, value: Any) -> float:
    if not _is_number(value) or not 0 <= value < 1:
        raise _bad(schedule, param, "a number in [0, 1)", value)
    return value


def flag(schedule: str, param: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(schedule, param, "true or false", value)
    return value


def per_group_lrs(schedule: str, param: str, value: Any, group_count: int) -> list[float]:
    """One lr per param group: a single number applies to all groups, a list gives each group its own."""
    if isinstance(value, (list, tuple)):
        if len(value) != group_count:
            raise _bad(schedule, param, f"one number or a list of {group_count} (one per param group)", value)
        return [non_negative_number(schedule, param, item) for item in value]
    return [non_negative_number(schedule, param, value)] * group_count


def check_warmup_type(schedule: str, value: Any) -> str:
    # DeepSpeed warns and silently falls back to "log"; a typo here changes the whole warmup, so it is an error.
    if value not in WARMUP_TYPES:
        raise _bad(schedule, "warmup_type", '"log" or "linear"', value, did_you_mean(str(value), WARMUP_TYPES))
    return value


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, case-insensitively, or '' when nothing is close."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    return f' (did you mean "{by_lower[close[0]]}"?)' if close else ""
