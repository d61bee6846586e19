"""Pid files that test workers write ($PID_DIR/*.pid), and whether those processes still run."""

import os
import signal
from pathlib import Path

import psutil


def recorded(directory: Path) -> list[int]:
    return [int(f.read_text()) for f in directory.glob("*.pid") if f.read_text()]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_survivors(directory: Path) -> list[int]:
    """SIGKILL every recorded process still running (so a failed test leaves nothing) and return their pids."""
    alive = [pid for pid in recorded(directory) if running(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive
