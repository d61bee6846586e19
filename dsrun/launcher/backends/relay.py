"""The launcher's end of remote output: lines arrive from node agents already labelled `[host rank N]`; copy them to
the console, write each to its rank's log under --log-dir on this machine, and hand agent events to the runner.

One lock guards the console and the logs, and each line goes out in one write, so lines of different hosts and
ranks never mix. With a screen (--live) the console lines are handed to it instead: it prints them above its table.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path
from typing import BinaryIO, Protocol

from dsrun.console import say
from dsrun.launcher.node import output
from dsrun.launcher.node.protocol import parse_event

_LABEL = re.compile(rb"^\[(?P<host>[^\]\s]+) rank (?P<rank>\d+)\] ")
_COLOURS = (b"\x1b[36m", b"\x1b[33m", b"\x1b[35m", b"\x1b[32m", b"\x1b[34m", b"\x1b[31m")
_RESET = b"\x1b[0m"


class Screen(output.Screen, Protocol):
    """The live view as the relay uses it: a rank's lines, and lines that are no rank's."""

    def text(self, text: bytes) -> None:
        """A line that is no rank's."""
        ...


class Relay:
    def __init__(self, *, console: bool, log_dir: Path | None, on_event):
        self.console = console
        self.screen: Screen | None = None
        self.log_dir = log_dir
        self.on_event = on_event  # called with (source, event dict) for agent events
        self._lock = threading.Lock()
        self._logs: dict[int, BinaryIO] = {}
        self._colour = {
            fd: "NO_COLOR" not in os.environ and stream.isatty() for fd, stream in ((1, sys.stdout), (2, sys.stderr))
        }

    def _log(self, rank: int) -> BinaryIO | None:
        if self.log_dir is None:
            return None
        if rank not in self._logs:
            self._logs[rank] = open(self.log_dir / f"rank{rank}.log", "wb")  # noqa: SIM115 - closed in close()
        return self._logs[rank]

    def line(self, source, raw: bytes, fd: int) -> None:
        """One line (with its newline) from an agent's stdout (fd 1) or stderr (fd 2)."""
        if not raw.endswith(b"\n"):
            raw += b"\n"
        if fd == 2:
            event = parse_event(raw.decode("utf-8", "replace").rstrip("\n"))
            if event is not None:
                self.on_event(source, event)
                return
        label = _LABEL.match(raw)
        target = sys.stdout.buffer if fd == 1 else sys.stderr.buffer
        with self._lock:
            if label is None:  # the agent's own words, or the remote shell's: always shown
                if self.screen is not None:
                    self.screen.text(raw)
                    return
                target.write(raw)
                target.flush()
                return
            log = self._log(int(label["rank"]))
            if log is not None:
                log.write(raw[label.end():])
                log.flush()
            if self.console and self.screen is not None:
                self.screen.line(int(label["rank"]), raw[1:label.end() - 2].decode("utf-8", "replace"),
                                 raw[label.end():])
            elif self.console:
                if self._colour[fd]:
                    colour = _COLOURS[int(label["rank"]) % len(_COLOURS)]
                    raw = colour + raw[:label.end() - 1] + _RESET + raw[label.end() - 1:]
                target.write(raw)
                target.flush()

    def say(self, message: str) -> None:
        with self._lock:
            say(message)

    def close(self) -> None:
        with self._lock:
            for log in self._logs.values():
                log.close()
            self._logs.clear()


def pump(stream, relay: Relay, source, fd: int) -> None:
    """Copy a byte stream line by line into the relay until it ends (used in a thread per stream)."""
    try:
        for raw in iter(stream.readline, b""):
            relay.line(source, raw, fd)
    except OSError:
        pass  # the connection went away; its end is reported by whoever waits on it
