"""Every rank's Python stack on request, without stopping the job: `kill -USR1 <dsrun pid>`.

A worker that went through dsrun's runtime has faulthandler registered on SIGUSR1 and writes its threads' stacks to
its stderr, which reaches the console with its rank's prefix. Any other process would die of SIGUSR1 (the signal's
default action), so it is only sent to a process that catches it; for the others py-spy dumps the stack from outside
when it is installed, and otherwise the launcher says that no stack can be had. Linux only, as the supervisor is.
A hang report (--hang-timeout) collects the same stacks as text instead of showing them (collect_stacks).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Protocol

STACK_SIGNAL = signal.SIGUSR1
ANNOUNCE = "SIGUSR1: every rank's stack follows; the job goes on"
PY_SPY_SECONDS = 20.0
DUMP_WAIT = 5.0  # faulthandler writes from its signal handler, at once, even in a rank blocked in a collective
DUMP_QUIET = 0.3  # seconds without a new dump line after which a rank's dump is taken as complete
NO_STACK = ("no stack: its process does not take SIGUSR1 (dsrun.initialize and dsrun.init_distributed install"
            " that) and py-spy is not installed (pip install py-spy)")

# The lines faulthandler writes for a dump (any Python version's thread header); nothing else is captured.
DUMP_LINE = re.compile(r'^(|(Current thread|Thread) 0x[0-9a-fA-F]+.*\(most recent call first\):|'
                       r'Stack \(most recent call first\):|  File ".*", line \d+ in .*|  <no Python frame>|  \.\.\.)$')


def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (the SigCgt mask in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


@dataclass(frozen=True)
class RankStack:
    """One rank's stack as text, and how it was had: "faulthandler", "py-spy", or "" with `note` saying why not."""

    text: str
    how: str
    note: str = ""


def _py_spy(py_spy: str, pid: int) -> str:
    try:
        result = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                                timeout=PY_SPY_SECONDS, check=False)
        return (result.stdout or result.stderr).rstrip()
    except (OSError, subprocess.TimeoutExpired) as err:  # a stack request must never end the job
        return f"py-spy failed: {err}"


def _signal(pid: int) -> None:
    try:
        os.kill(pid, STACK_SIGNAL)
    except ProcessLookupError:
        pass  # it ended meanwhile


def dump_stacks(running: dict[int, int], notify: Callable[[str], None]) -> None:
    """Ask every running rank ({rank: pid}) for its stack."""
    py_spy = shutil.which("py-spy")
    for rank, pid in sorted(running.items()):
        if catches(pid, STACK_SIGNAL):
            _signal(pid)
        elif py_spy is not None:
            notify(f"rank {rank} stack (py-spy):\n{_py_spy(py_spy, pid)}")
        else:
            notify(f"rank {rank}: {NO_STACK}")


class Capture(Protocol):
    """Where a signalled rank's dump arrives: its stderr, read by the node's OutputRouter."""

    def capture(self, ranks: list[int]) -> None: ...

    def captured(self) -> tuple[set[int], float]: ...

    def take_captured(self) -> dict[int, list[str]]: ...


def collect_stacks(running: dict[int, int], capture: Capture, *, wait: float = DUMP_WAIT) -> dict[int, RankStack]:
    """Every running rank's stack as text, for a report: what the ranks dump on SIGUSR1 is taken from their stderr
    (not shown) until every one has dumped and nothing came for DUMP_QUIET seconds, at most `wait` seconds."""
    signalled = sorted(rank for rank, pid in running.items() if catches(pid, STACK_SIGNAL))
    capture.capture(signalled)
    for rank in signalled:
        _signal(running[rank])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        dumped, quiet_for = capture.captured()
        if dumped >= set(signalled) and quiet_for >= DUMP_QUIET:
            break
        time.sleep(0.05)
    lines = capture.take_captured()
    stacks = {}
    for rank in signalled:
        text = "\n".join(lines.get(rank, [])).strip("\n")
        stacks[rank] = RankStack(text, "faulthandler", "" if text else f"no stack within {wait:g} s of SIGUSR1")
    py_spy = shutil.which("py-spy")
    for rank in sorted(set(running) - set(signalled)):
        if py_spy is not None:
            stacks[rank] = RankStack(_py_spy(py_spy, running[rank]), "py-spy")
        else:
            stacks[rank] = RankStack("", "", NO_STACK)
    return stacks
