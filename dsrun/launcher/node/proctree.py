"""Process-tree facts and kills, on Linux, with psutil.

The launcher makes itself a child subreaper: a worker's grandchild orphaned by its parent (even one that called
setsid) is re-parented to us instead of init, so "every process we started" is exactly our descendant tree and
teardown can find all of it. Workers get PR_SET_PDEATHSIG so that even a SIGKILLed launcher takes them along.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import psutil

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def make_child_setup(parent_pid: int, cores: list[int] | None):
    """A preexec_fn for a worker: die with the launcher, and run on the given cores.

    Runs between fork and exec, so it only calls async-signal-safe things (prctl, sched_setaffinity, _exit);
    the supervisor forks every worker before it starts any thread.
    """

    def setup() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the launcher died before prctl took effect
            os._exit(1)
        if cores:
            os.sched_setaffinity(0, cores)

    return setup


def descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def signal_all(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def outside_groups(procs: list[psutil.Process], groups: set[int]) -> list[psutil.Process]:
    """The processes whose process group is not one of `groups` (they escaped with setsid/setpgid)."""
    outside = []
    for proc in procs:
        try:
            if os.getpgid(proc.pid) not in groups:
                outside.append(proc)
        except ProcessLookupError:
            pass
    return outside


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    living = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                living.append(proc)
        except psutil.Error:
            pass
    return living


def reap_orphans(workers: set[int]) -> None:
    """Collect exit statuses of re-parented grandchildren; the workers themselves are reaped by their Popen."""
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        if child.pid in workers:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def wait_gone(procs: list[psutil.Process], timeout: float, workers: set[int], tick=None) -> list[psutil.Process]:
    """Wait until `procs` are gone or `timeout` passes; returns those still alive. `tick` runs every loop."""
    deadline = time.monotonic() + timeout
    left = alive(procs)
    while left and time.monotonic() < deadline:
        if tick:
            tick()
        reap_orphans(workers)
        time.sleep(0.05)
        left = alive(left)
    return left
