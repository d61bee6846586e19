"""Timing several implementations inside one worker pair, interleaved, so the machine's drift falls on all alike.

A repetition is several short rounds, each implementation in turn (a burst of other work on the 2-core machine,
seconds long, then falls on all of them instead of on one implementation's whole block), and the order rotates every
repetition. The pipeline and MoE workers share this loop; anything with a `run(count)` method can be timed.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

import torch.distributed as dist


class Runnable(Protocol):
    def run(self, count: int) -> None: ...


def timed_block(runner: Runnable, count: int) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds per call (see train_worker.timed_block)."""
    dist.barrier()  # both ranks start together, so one rank's wait for the other is not counted as its speed
    start, cpu_start = time.perf_counter(), time.process_time()
    runner.run(count)
    cpu = time.process_time() - cpu_start
    dist.barrier()
    return (time.perf_counter() - start) / count, cpu / count


def interleave(runners: dict[str, Runnable], reps: int, rounds: int, per_round: int, label: str, unit: str,
               rank: int) -> dict:
    """{"times", "cpu_times"}: per implementation one figure per repetition (the mean over its rounds), and
    "orders": the order of every repetition. Rank 0 prints each repetition's figures as it goes."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    orders = []
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        orders.append(order)
        wall = {name: 0.0 for name in names}
        cpu = {name: 0.0 for name in names}
        for _ in range(rounds):
            for name in order:
                block_wall, block_cpu = timed_block(runners[name], per_round)
                wall[name] += block_wall / rounds
                cpu[name] += block_cpu / rounds
        for name in names:
            times[name].append(wall[name])
            cpu_times[name].append(cpu[name])
        if rank == 0:
            shown = ", ".join(f"{n} {times[n][-1]:.4f}" for n in names)
            print(f"  {label} rep {rep + 1}/{reps}: {shown} {unit}", file=sys.stderr, flush=True)
    return {"times": times, "cpu_times": cpu_times, "orders": orders}
