"""What rank 0 prints while training: `steps_per_print` progress lines and `wall_clock_breakdown` timings."""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import torch


def say(message: str) -> None:
    print(f"dsrun: {message}", file=sys.stderr, flush=True)


class Timers:
    """Milliseconds spent in forward / backward / step, summed between two reports.

    Only active with wall_clock_breakdown: on CUDA each reading waits for the device, which costs throughput.
    """

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self.sync = device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
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
            self.totals[name] += (time.perf_counter() - self._started.pop(name)) * 1000
            self.counts[name] += 1

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
