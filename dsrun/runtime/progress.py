"""What rank 0 prints while training: `steps_per_print` progress lines and `wall_clock_breakdown` timings."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepStats:
    """One optimizer step as rank 0 records it (the monitors' row)."""

    step: int
    samples: int
    loss: float  # mean over the step's micro-batches and all ranks
    lr: float  # the first param group's
    grad_norm: float | None
    loss_scale: float | None  # fp16 only
    applied: bool  # False when an overflow skipped the update
    skipped_steps: int
    step_time_s: float  # wall time since the previous step ended
    samples_per_sec: float
    forward_ms: float | None = None  # with wall_clock_breakdown: this step's sums
    backward_ms: float | None = None
    optimizer_ms: float | None = None


class Timers:
    """Milliseconds spent in forward / backward / step, summed between two reports.

    Only active with wall_clock_breakdown: on CUDA each reading waits for the device, which costs throughput.
    """

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self.sync = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.this_step: dict[str, float] = defaultdict(float)  # reset by take_step()
        self._started: dict[str, float] = {}

    def start(self, name: str) -> None:
        if self.enabled:
            if self.sync:
                torch.cuda.synchronize()
            self._started[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        if self.enabled and name in self._started:
            if self.sync:
                torch.cuda.synchronize()
            elapsed = (time.perf_counter() - self._started.pop(name)) * 1000
            self.totals[name] += elapsed
            self.counts[name] += 1
            self.this_step[name] += elapsed

    def take_step(self) -> dict[str, float]:
        taken, self.this_step = dict(self.this_step), defaultdict(float)
        return taken

    def report(self) -> str:
        parts = [f"{name} {self.totals[name] / self.counts[name]:.1f} ms" for name in ("forward", "backward", "step")
                 if self.counts[name]]
        self.totals.clear()
        self.counts.clear()
        return " | ".join(parts)


class Throughput:
    """Samples per second over the steps since the last report."""

    def __init__(self):
        self.since = time.perf_counter()
        self.samples = 0

    def add(self, samples: int) -> None:
        self.samples += samples

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.samples / max(now - self.since, 1e-9)
        self.since, self.samples = now, 0
        return rate
