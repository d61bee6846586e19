"""The job's watchdog: once its supervisor is gone, however it ended (SIGKILL included), nothing of the job survives.

The supervisor starts it (`Watchdog`) before any worker, in its own session so that signals meant for the job never
reach it, with the read end of a pipe as its stdin; only the supervisor holds the write end. The supervisor writes
each worker's process group there. When the pipe reaches EOF (the supervisor ended, normally or killed outright),
the watchdog SIGKILLs every process of the job, looks again and again until none is left (a process may fork while
it is being killed), and exits.

A process belongs to the job when
- its environment carries the job's token (JOB_TOKEN_ENV, set in every worker's environment; every descendant
  inherits it, whatever session or process group it moves to), or
- it is in a worker's process group (a child started with a cleared environment that stayed there), or
- its parent belongs to the job (a child that cleared its environment and left the group, while its parent lives).
What escapes: a process with none of the three, i.e. one started with a cleared environment in a new session or
group whose parent was gone before the watchdog looked (a daemon that double-forked without the environment).

The token is read from /proc/PID/environ, the environment a process was started with: a process that changes its
own environment (os.environ.clear()) still carries it; only a new program started with another environment drops it.

Only the standard library: the supervisor runs this file as `python -I -S watchdog.py`, which keeps its start short
(no site-packages to scan) and out of reach of the user's site-packages and PYTHON* variables.
"""

from __future__ import annotations

import os
import signal
import sys
import time

JOB_TOKEN_ENV = "DSRUN_JOB_TOKEN"
DONE = b"done\n"  # the supervisor's last line when it ended normally (it has already stopped everything)
KEEP_TRYING = 30.0  # seconds: a process stuck in the kernel (state D) dies only once its I/O returns


# -- the supervisor's side ---------------------------------------------------------------------------------------
def new_token() -> str:
    return os.urandom(16).hex()


def token_value(inherited: str | None, token: str) -> str:
    """JOB_TOKEN_ENV for a worker: a dsrun started inside another job's worker keeps that job's token too, so the
    outer watchdog still finds the inner job's processes."""
    return f"{inherited},{token}" if inherited else token


class Watchdog:
    """The supervisor's handle on its running watchdog."""

    def __init__(self, token: str):
        import subprocess  # here, not above: the watchdog process itself must start fast

        read_end, self._write_end = os.pipe()  # both close-on-exec: no worker inherits the write end
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), token, str(os.getpid())],
                stdin=read_end, stdout=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def record_group(self, pgid: int) -> None:
        self._send(f"pgid {pgid}\n".encode())

    def _send(self, line: bytes) -> None:
        try:
            os.write(self._write_end, line)
        except OSError:
            pass  # the watchdog is gone (someone killed it); the supervisor's own teardown still holds

    def finish(self, timeout: float = 5.0) -> None:
        """At the supervisor's normal end: let the watchdog make its last check, and wait for it to exit."""
        import select

        if self._write_end < 0:
            return
        self._send(DONE)
        os.close(self._write_end)
        self._write_end = -1
        # Its pidfd wakes us the moment it exits; Popen.wait(timeout) polls with growing sleeps (~15 ms here).
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            exited, _, _ = select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        if not exited:
            self.proc.kill()
        self.proc.wait()


# -- which processes belong to the job ---------------------------------------------------------------------------
class ProcInfo:
    """What the watchdog needs to know of one process (a plain class: dataclasses would slow its start)."""

    __slots__ = ("ppid", "pgid", "zombie", "has_token")

    def __init__(self, ppid: int, pgid: int, zombie: bool, has_token: bool):
        self.ppid, self.pgid = ppid, pgid
        self.zombie = zombie  # dead already (Z or X): nothing to kill
        self.has_token = has_token


def carries_token(environ: bytes, token: str) -> bool:
    """Whether a raw /proc/PID/environ (NUL-separated KEY=VALUE entries) has `token` in JOB_TOKEN_ENV."""
    prefix = JOB_TOKEN_ENV.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return token.encode() in entry[len(prefix):].split(b",")
    return False


def _read_proc(pid: int, token: str) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None  # gone
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    zombie = fields[0] in (b"Z", b"X")
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        environ = b""  # gone, or another user's process (we run unprivileged): not one we started
    return ProcInfo(ppid=int(fields[1]), pgid=int(fields[2]), zombie=zombie, has_token=carries_token(environ, token))


def snapshot(token: str) -> dict[int, ProcInfo]:
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = _read_proc(int(name), token)
            if info is not None:
                procs[int(name)] = info
    return procs


def job_processes(procs: dict[int, ProcInfo], groups: set[int], me: int) -> set[int]:
    """The living processes of the job in a snapshot (see the module's docstring)."""
    # A group counts only while its leader (the worker: pid == pgid) is gone or ours. Once a group is empty its
    # number is free again (pid_max may be 32768), and a stranger could lead a group of that number.
    ours = {g for g in groups if g not in procs or procs[g].has_token or procs[g].zombie}
    found = {pid for pid, p in procs.items() if p.has_token or p.pgid in ours}
    children: dict[int, list[int]] = {}
    for pid, p in procs.items():
        children.setdefault(p.ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {pid for pid in found if not procs[pid].zombie and pid != me}


def kill_job(token: str, groups: set[int], me: int, keep_trying: float = KEEP_TRYING) -> tuple[int, list[int]]:
    """SIGKILL the job's processes until none is left; returns how many were killed and those that would not die."""
    killed: set[int] = set()
    deadline = time.monotonic() + keep_trying
    while True:
        found = job_processes(snapshot(token), groups, me)
        if not found or time.monotonic() > deadline:
            return len(killed), sorted(found)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed |= found
        time.sleep(0.01)  # let the kills land before the next look


# -- the watchdog process ----------------------------------------------------------------------------------------
def _say(message: str) -> None:
    try:
        print(f"dsrun watchdog: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass  # nobody is listening any more


def main(argv: list[str]) -> int:
    token, supervisor = argv[0], argv[1]
    received = b""
    while True:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        received += chunk
    lines = received.splitlines(keepends=True)
    groups = {int(line.split()[1]) for line in lines if line.startswith(b"pgid ")}
    killed, stuck = kill_job(token, groups, os.getpid())
    if killed and DONE not in lines:
        _say(f"dsrun (pid {supervisor}) ended without stopping its job; killed {killed} process(es) left of it")
    elif killed:
        _say(f"killed {killed} process(es) of the job that outlived dsrun's own teardown")
    if stuck:
        _say(f"process(es) {', '.join(map(str, stuck))} of the job would not die (SIGKILL) in {KEEP_TRYING:g} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
