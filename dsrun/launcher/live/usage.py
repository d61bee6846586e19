"""CPU and memory of each worker process, read by its supervisor with psutil (the worker does nothing for it).

CPU % is psutil's: the process's CPU time since the previous reading over the wall time between them, 100 per
core busy. It needs two readings, so a worker's first poll shows none. The worker process itself is measured, not
the processes it starts (data loader workers): walking the tree every second would cost more than the rest of the
view together.
"""

from __future__ import annotations

import psutil

from dsrun.launcher.live.rows import Usage

NO_USAGE = Usage(None, None)


class UsageProbe:
    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def read(self, pid: int) -> Usage:
        process = self._processes.get(pid)
        first = process is None
        try:
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            with process.oneshot():
                cpu = process.cpu_percent(None)
                rss = process.memory_info().rss
        except psutil.Error:  # gone (or a zombie) between the poll and now
            self._processes.pop(pid, None)
            return NO_USAGE
        return Usage(None if first else cpu, rss)

    def forget(self, pid: int) -> None:
        self._processes.pop(pid, None)
