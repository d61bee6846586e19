"""--live over SSH and Slurm: each node agent reads its own ranks (process, progress slot, psutil) on every pass of
its supervisor's loop, about once a second, and sends them to the launcher as a `live` event; the launcher's view
turns them into rows with its own clock, as it does for a local run.

The event: {"event": "live", "node_rank": N, "ranks": {"RANK": {"pid": PID, "returncode": CODE or null,
"progress": [step, samples, loss, loss_step] or null, "cpu": PERCENT or null, "rss": BYTES or null}, ...}}
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from dsrun.launcher.live.rows import RankSeen, Usage
from dsrun.launcher.live.usage import NO_USAGE, UsageProbe
from dsrun.launcher.node.progress import Progress


class RelayLive:
    """A node agent's live view: it draws nothing, it tells the launcher. `emit(kind, **fields)` sends an event."""

    def __init__(self, node_rank: int, emit: Callable[..., None]):
        self.node_rank = node_rank
        self.emit = emit
        self._usage = UsageProbe()

    def show(self, seen: dict[int, RankSeen], now: float) -> None:
        ranks = {}
        for rank, one in seen.items():
            usage = self._usage.read(one.pid) if one.returncode is None else NO_USAGE
            ranks[str(rank)] = {"pid": one.pid, "returncode": one.returncode,
                                "progress": list(one.progress) if one.progress is not None else None,
                                "cpu": usage.cpu_percent, "rss": usage.rss}
        self.emit("live", node_rank=self.node_rank, ranks=ranks)


class View(Protocol):
    def update(self, ranks: dict[int, tuple[RankSeen, Usage]], now: float) -> None: ...


def route_live_events(on_event: Callable[[object, dict], None], view: View) -> Callable[[object, dict], None]:
    """The launcher's event handler with `live` events going to `view` (on the relay's thread, timed on arrival)."""

    def handle(source: object, event: dict) -> None:
        if event["event"] == "live":
            view.update(ranks_of(event), time.monotonic())
        else:
            on_event(source, event)

    return handle


def ranks_of(event: dict) -> dict[int, tuple[RankSeen, Usage]]:
    """The launcher's side: what a `live` event says of each rank."""
    ranks = {}
    for rank, one in event["ranks"].items():
        progress = Progress(*one["progress"]) if one["progress"] is not None else None
        ranks[int(rank)] = (RankSeen(int(one["pid"]), one["returncode"], progress), Usage(one["cpu"], one["rss"]))
    return ranks
