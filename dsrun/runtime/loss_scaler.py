"""fp16 loss scaling as DeepSpeed 0.19.8's ZeRO path does it (hysteresis honoured), plus a static scale.

The engine multiplies the loss by `loss_scale` before backward, computes the global gradient norm in fp32 (summed
over all ranks, so every rank agrees), skips the update when it is not finite, and calls `update(overflow)` once per
optimizer step.

Dynamic rule (a trace is in tests/unit/test_loss_scaler.py):
* overflow with no hysteresis left (`hysteresis == 1` or the remaining count is 1): halve the scale, never below
  `min_scale`; already at `min_scale`, the run cannot go on and a RuntimeError says so. Hysteresis is not refilled.
* overflow with hysteresis left: keep the scale, use up one unit of hysteresis.
* clean step: refill hysteresis if `consecutive_hysteresis`; then, counting the clean steps since the last overflow
  excluding this one (`stable`), grow the scale when `stable > 0` and `stable % scale_window == 0`, refilling
  hysteresis. So with no overflow the scale grows at update index window, 2·window, ... (0-based), and after an
  overflow at index k at k + window + 1, k + 2·window + 1, ...

DeepSpeed's non-ZeRO FP16_Optimizer ignores hysteresis and never raises at the floor; dsrun uses the ZeRO rule for
every stage, so the same config behaves the same at any stage.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from dsrun.errors import UsageError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"fp16.{key} must be a positive integer, got {value!r}; fix it in the config's fp16 section")
    return value


def _positive_finite(key: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"fp16.{key} must be a finite number > 0, got {value!r}; fix it in the config's fp16 section")
    return float(value)


def _check_kind(state: Mapping[str, Any], dynamic: bool) -> None:
    if bool(state["dynamic"]) != dynamic:
        saved, wanted = ("dynamic", "static") if state["dynamic"] else ("static", "dynamic")
        raise UsageError(f"the checkpoint's fp16 loss scale is {saved} but the config asks for a {wanted} one; "
                         f"set fp16.loss_scale to {'0' if state['dynamic'] else state['cur_scale']} to resume it")


class DynamicLossScaler:
    """The scale grows by `scale_factor` after `scale_window` clean steps and shrinks on overflow (see module doc)."""

    dynamic = True

    def __init__(
        self,
        init_scale: float,
        scale_window: int,
        hysteresis: int,
        consecutive_hysteresis: bool,
        min_scale: float,
        scale_factor: float = 2.0,
    ) -> None:
        if not _is_number(init_scale) or not math.isfinite(init_scale) or init_scale <= 0:
            raise UsageError(f"the initial fp16 loss scale must be a finite number > 0, got {init_scale!r}; "
                             f"fix fp16.initial_scale_power")
        init_scale = float(init_scale)
        self.scale_window = _positive_int("loss_scale_window", scale_window)
        self.hysteresis = _positive_int("hysteresis", hysteresis)
        if not isinstance(consecutive_hysteresis, bool):
            raise UsageError(f"fp16.consecutive_hysteresis must be true or false, got {consecutive_hysteresis!r}")
        self.consecutive_hysteresis = consecutive_hysteresis
        self.min_scale = _positive_finite("min_loss_scale", min_scale)
        if init_scale < self.min_scale:
            raise UsageError(f"the initial fp16 loss scale {init_scale:g} is below fp16.min_loss_scale "
                             f"{self.min_scale:g}; raise fp16.initial_scale_power or lower fp16.min_loss_scale")
        if not _is_number(scale_factor) or not scale_factor > 1:
            raise ValueError(f"scale_factor must be a number > 1, got {scale_factor!r}")
        self.scale_factor = float(scale_factor)
        self.cur_scale = init_scale
        self.cur_iter = 0
        self.last_overflow_iter = -1
        self.cur_hysteresis = self.hysteresis

    @property
    def loss_scale(self) -> float:
        return self.cur_scale

    def update(self, overflow: bool) -> None:
        """Account for one optimizer step; `overflow` must already agree across ranks."""
        if overflow:
            self._on_overflow()
            self.last_overflow_iter = self.cur_iter
        else:
            self._on_clean_step()
        self.cur_iter += 1

    def _on_overflow(self) -> None:
        if self.hysteresis > 1 and self.cur_hysteresis > 1:
            self.cur_hysteresis -= 1
            return
        if self.cur_scale == self.min_scale:
            raise RuntimeError(
                f"fp16 loss scale is at min_loss_scale ({self.min_scale:g}) and the gradients still overflow, "
                f"so the run cannot continue; train in bf16, or lower fp16.min_loss_scale")
        self.cur_scale = max(self.cur_scale / self.scale_factor, self.min_scale)

    def _on_clean_step(self) -> None:
        if self.consecutive_hysteresis:
            self.cur_hysteresis = self.hysteresis
        stable = self.cur_iter - self.last_overflow_iter - 1
        if stable > 0 and stable % self.scale_window == 0:
            self.cur_hysteresis = self.hysteresis
            self.cur_scale *= self.scale_factor

    def state_dict(self) -> dict[str, Any]:
        return {"dynamic": True, "cur_scale": self.cur_scale, "cur_iter": self.cur_iter,
                "last_overflow_iter": self.last_overflow_iter, "cur_hysteresis": self.cur_hysteresis}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume the scale and its counters; window, hysteresis and the floor stay as configured."""
        _check_kind(state, dynamic=True)
        self.cur_scale = float(state["cur_scale"])
        self.cur_iter = int(state["cur_iter"])
        self.last_overflow_iter = int(state["last_overflow_iter"])
        self.cur_hysteresis = int(state["cur_hysteresis"])


class StaticLossScaler:
    """A fixed scale (`fp16.loss_scale > 0`); overflowing steps are still skipped by the engine."""

    dynamic = False

    def __init__(self, scale: float) -> None:
        self.cur_scale = _positive_finite("loss_scale", scale)

    @property
    def loss_scale(self) -> float:
        return self.cur_scale

    def update(self, overflow: bool) -> None:
        """A static scale ignores overflows; the method exists so the engine treats both scalers alike."""

    def state_dict(self) -> dict[str, Any]:
        return {"dynamic": False, "cur_scale": self.cur_scale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Only checks the checkpoint was static too: the configured scale is the one to use."""
        _check_kind(state, dynamic=False)


def make_loss_scaler(
    loss_scale: float = 0,
    initial_scale_power: int = 16,
    loss_scale_window: int = 1000,
    hysteresis: int = 2,
    consecutive_hysteresis: bool = False,
    min_loss_scale: float = 1,
) -> DynamicLossScaler | StaticLossScaler:
    """The scaler the config's fp16 section asks for (same keys and defaults): dynamic when loss_scale is 0."""
    if not _is_number(loss_scale) or not math.isfinite(loss_scale) or loss_scale < 0:
        raise UsageError(f"fp16.loss_scale must be 0 (dynamic scaling) or a finite number > 0, got {loss_scale!r}")
    if loss_scale > 0:
        return StaticLossScaler(loss_scale)
    if isinstance(initial_scale_power, bool) or not isinstance(initial_scale_power, int):
        raise UsageError(f"fp16.initial_scale_power must be an integer, got {initial_scale_power!r}")
    try:
        init_scale = 2.0**initial_scale_power
    except OverflowError:
        raise UsageError(f"fp16.initial_scale_power {initial_scale_power} is too large (2**power overflows a float);"
                         f" use a value like 16") from None
    return DynamicLossScaler(
        init_scale=init_scale,
        scale_window=loss_scale_window,
        hysteresis=hysteresis,
        consecutive_hysteresis=consecutive_hysteresis,
        min_scale=min_loss_scale,
    )
