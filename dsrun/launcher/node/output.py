"""Worker output: read each pipe line by line, prefix it with its rank, copy it to the console and a log file.

One lock guards the console and each line goes out in a single write, so two ranks' bytes never share a line.
With a screen (--live) the console lines, stdout's and stderr's alike, are handed to it instead: it prints them
above its table.
While a hang report collects stacks, the dump lines of the ranks it asked are kept for it instead of shown.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from dsrun.launcher.node.stacks import DUMP_LINE

_COLOURS = (b"\x1b[36m", b"\x1b[33m", b"\x1b[35m", b"\x1b[32m", b"\x1b[34m", b"\x1b[31m")
_RESET = b"\x1b[0m"
_MAX_LINE = 1 << 16  # a line without a newline is flushed in chunks of this size
TAIL_LINES = 20


class Screen(Protocol):
    def line(self, rank: int, label: str, text: bytes) -> None:
        """One line of a worker's output, ending with a newline."""
        ...


def _wants_colour(stream: IO) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


class OutputRouter:
    def __init__(self, console: bool = True, log_dir: Path | None = None, label=lambda rank: f"rank {rank}",
                 screen: Screen | None = None):
        self.console = console
        self.screen = screen
        self.log_dir = log_dir
        self.label = label
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._logs: dict[int, BinaryIO] = {}
        self.tails: dict[int, collections.deque[str]] = collections.defaultdict(
            lambda: collections.deque(maxlen=TAIL_LINES)
        )
        self._colour = {1: _wants_colour(sys.stdout), 2: _wants_colour(sys.stderr)}
        self._captured: dict[int, list[str]] = {}
        self._last_captured = 0.0

    def open_log(self, rank: int) -> None:
        if self.log_dir is not None:
            self._logs[rank] = open(self.log_dir / f"rank{rank}.log", "wb")  # noqa: SIM115 - closed in close()

    def follow(self, rank: int, pipe: IO[bytes], fd: int) -> None:
        """Start a thread copying `pipe` (the worker's stdout if fd == 1, stderr if 2)."""
        thread = threading.Thread(target=self._pump, args=(rank, pipe, fd), daemon=True, name=f"rank{rank}-fd{fd}")
        thread.start()
        self._threads.append(thread)

    def _pump(self, rank: int, pipe: BinaryIO, fd: int) -> None:
        target = sys.stdout.buffer if fd == 1 else sys.stderr.buffer
        colour = _COLOURS[rank % len(_COLOURS)] if self._colour[fd] else b""
        prefix = colour + f"[{self.label(rank)}]".encode() + (_RESET if colour else b"") + b" "
        log = self._logs.get(rank)
        with pipe:
            for line in iter(lambda: pipe.readline(_MAX_LINE), b""):
                if not line.endswith(b"\n"):
                    line += b"\n"
                if fd == 2:
                    text = line.decode("utf-8", "replace").rstrip("\n")
                    if self._keep_for_report(rank, text):
                        continue
                    self.tails[rank].append(text)
                with self._lock:
                    if log is not None and not log.closed:
                        log.write(line)
                        log.flush()
                    if self.console and self.screen is not None:
                        self.screen.line(rank, self.label(rank), line)
                    elif self.console:
                        target.write(prefix + line)
                        target.flush()

    # -- stacks for a hang report (dsrun.launcher.node.stacks.collect_stacks) ---------------------------------------
    def capture(self, ranks: list[int]) -> None:
        """From now on keep these ranks' dump lines (stderr) for the report, instead of showing and logging them."""
        with self._lock:
            self._captured = {rank: [] for rank in ranks}
            self._last_captured = time.monotonic()

    def captured(self) -> tuple[set[int], float]:
        """The ranks whose dump has begun (a frame line arrived), and seconds since the last line kept."""
        with self._lock:
            begun = {rank for rank, lines in self._captured.items() if any(ln.startswith("  File") for ln in lines)}
            return begun, time.monotonic() - self._last_captured

    def take_captured(self) -> dict[int, list[str]]:
        """The lines kept, per rank; from now on every line is shown again."""
        with self._lock:
            captured, self._captured = self._captured, {}
            return captured

    def _keep_for_report(self, rank: int, text: str) -> bool:
        if not self._captured:  # the usual case, without taking the lock
            return False
        with self._lock:
            lines = self._captured.get(rank)
            if lines is None or not DUMP_LINE.match(text):
                return False
            lines.append(text)
            self._last_captured = time.monotonic()
            return True

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the pipes to drain (they close once every process holding them is gone), then close logs."""
        for thread in self._threads:
            thread.join(timeout)
        with self._lock:
            for log in self._logs.values():
                log.close()
