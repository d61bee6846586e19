"""Every rank's Python stack on request, without stopping the job: `kill -USR1 <dsrun pid>`.

A worker that went through dsrun's runtime has faulthandler registered on SIGUSR1 and writes its threads' stacks to
its stderr, which reaches the console with its rank's prefix. Any other process would die of SIGUSR1 (the signal's
default action), so it is only sent to a process that catches it; for the others py-spy dumps the stack from outside
when it is installed, and otherwise the launcher says that no stack can be had. Linux only, as the supervisor is.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Callable

STACK_SIGNAL = signal.SIGUSR1
ANNOUNCE = "SIGUSR1: every rank's stack follows; the job goes on"
PY_SPY_SECONDS = 20.0


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


def dump_stacks(running: dict[int, int], notify: Callable[[str], None]) -> None:
    """Ask every running rank ({rank: pid}) for its stack."""
    py_spy = shutil.which("py-spy")
    for rank, pid in sorted(running.items()):
        if catches(pid, STACK_SIGNAL):
            try:
                os.kill(pid, STACK_SIGNAL)
            except ProcessLookupError:
                pass  # it ended meanwhile
        elif py_spy is not None:
            try:
                result = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                                        timeout=PY_SPY_SECONDS, check=False)
                text = (result.stdout or result.stderr).rstrip()
            except (OSError, subprocess.TimeoutExpired) as err:  # a stack request must never end the job
                text = f"py-spy failed: {err}"
            notify(f"rank {rank} stack (py-spy):\n{text}")
        else:
            notify(f"rank {rank}: no stack: its process does not take SIGUSR1 (dsrun.initialize and"
                   " dsrun.init_distributed install that) and py-spy is not installed (pip install py-spy)")
