"""The live view's rows: what each rank is doing, from what its node's supervisor sees at one poll — the worker's
process (alive, or how it ended), its progress slot (dsrun.launcher.node.progress) and psutil's view of its CPU
and memory. Rates and "seconds since the last progress" use the supervisor's clock: the worker writes no time.
Drawing the rows is view.py's concern."""

from __future__ import annotations

import collections
import signal
from dataclasses import dataclass

from dsrun.launcher.node.progress import NO_SAMPLES, RENDEZVOUS, Progress, encode

RATE_WINDOW = 10.0  # seconds of samples counts a rate is taken over: smooth, yet falls to 0 soon after a stall


@dataclass(frozen=True)
class RankSeen:
    """One rank at one poll, as its supervisor sees it."""

    pid: int
    returncode: int | None  # None while it runs
    progress: Progress | None  # None before it reported anything


@dataclass(frozen=True)
class Usage:
    cpu_percent: float | None  # of one core; None until psutil has two readings to compare
    rss: int | None  # bytes


@dataclass(frozen=True)
class RankRow:
    rank: int
    host: str
    pid: int
    state: str
    cpu_percent: float | None
    rss: int | None
    step: int | None  # the last optimizer step (0: through the rendezvous, none yet)
    loss: float | None
    loss_step: int | None  # the step `loss` belongs to, when it is not `step`
    samples_per_s: float | None
    since_progress: float | None  # while it runs: seconds since its slot last changed (or since it started)


def state_of(returncode: int | None, progress: Progress | None) -> str:
    if returncode is not None:
        if returncode < 0:
            try:
                return f"killed {signal.Signals(-returncode).name}"
            except ValueError:
                return f"killed signal {-returncode}"
        return f"exited {returncode}"
    if progress is None:
        return "starting"
    if progress.step == RENDEZVOUS:
        return "at rendezvous"
    return "running"


def _same(a: Progress | None, b: Progress | None) -> bool:
    """No news between two reads. By the slot's bytes: a NaN loss is never == itself, and a diverged rank that
    stopped stepping must not look busy forever."""
    if a is None or b is None:
        return a is b
    return encode(a) == encode(b)


class _History:
    """One rank's memory across polls."""

    def __init__(self, now: float):
        self.last: Progress | None = None
        self.changed = now
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, progress: Progress | None, now: float) -> None:
        if not _same(progress, self.last):
            self.changed = now
        self.last = progress
        if progress is None or progress.samples == NO_SAMPLES:
            self.samples.clear()
            return
        if self.samples and progress.samples < self.samples[-1][1]:
            self.samples.clear()  # a new engine, or a restart from an earlier checkpoint: start counting again
        self.samples.append((now, progress.samples))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (first_time, first), (last_time, last) = self.samples[0], self.samples[-1]
        return (last - first) / (last_time - first_time) if last_time > first_time else None


class RowBuilder:
    """Turns each poll's RankSeen and Usage into rows, remembering what rates and idle times need."""

    def __init__(self, hosts: dict[int, str], started: float):
        self.hosts = hosts
        self._history = {rank: _History(started) for rank in hosts}

    def row(self, rank: int, seen: RankSeen, usage: Usage, now: float) -> RankRow:
        history = self._history[rank]
        history.observe(seen.progress, now)
        progress = seen.progress
        running = seen.returncode is None
        step = loss = loss_step = None
        if progress is not None:
            step = None if progress.step == RENDEZVOUS else progress.step
            if progress.loss_step > 0:
                loss, loss_step = progress.loss, progress.loss_step
        return RankRow(
            rank=rank,
            host=self.hosts[rank],
            pid=seen.pid,
            state=state_of(seen.returncode, progress),
            cpu_percent=usage.cpu_percent if running else None,
            rss=usage.rss if running else None,
            step=step,
            loss=loss,
            loss_step=loss_step,
            samples_per_s=history.rate() if running else None,
            since_progress=now - history.changed if running else None,
        )
