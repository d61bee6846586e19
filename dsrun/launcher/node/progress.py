"""Each worker's last optimizer step, as its node's supervisor sees it (the worker side is dsrun.runtime.heartbeat).

The supervisor makes one 16-byte anonymous memory file per rank (memfd_create) and hands it to the worker as an
inherited file descriptor named in DSRUN_PROGRESS_FD; the worker maps it and stores `(step, ~step)` in it after
every optimizer step. Why a shared mapping: a store into memory is no system call and never blocks, whatever the
supervisor is doing (a pipe fills up when its reader stalls, and then the training step would wait for the
launcher); rewriting a file atomically (write a temporary file, rename it) costs several system calls and a
directory update per step (measured: ~20 us against ~0.3 us). Why a memfd and not a file on /dev/shm: it has no
name, so nothing is left behind even when dsrun is killed with SIGKILL, and nothing else can open it.
The worker writes no time: the supervisor reads every slot when it polls and timestamps a change with its own
clock. The check word (~step) makes a torn read (the worker writing while we read) or the all-zero slot as created
("nothing reported yet") show as "no news", never as a wrong step.
"""

from __future__ import annotations

import os
import struct
from typing import Protocol

from dsrun.launcher.node.stacks import RankStack

PROGRESS_ENV = "DSRUN_PROGRESS_FD"
MEMFD_NAME = "dsrun-progress"  # the worker checks the descriptor it is given is one of ours
SLOT = struct.Struct("<qq")  # step, ~step

# What a slot holds besides optimizer steps (1, 2, ...; an engine resumed from a checkpoint starts higher).
RENDEZVOUS = -1  # in init_distributed, waiting for the other ranks
JOINED = 0  # through the rendezvous, no optimizer step yet
# A rank that reported nothing (not through dsrun's runtime, or not at the rendezvous yet) has no step.
Steps = dict[int, int | None]


class ProgressWatch(Protocol):
    """What the supervisor tells about progress when --hang-timeout is on: the local hang detector, or the node
    agent that relays progress to the launcher."""

    def tick(self, steps: Steps, now: float) -> bool:
        """The running ranks' steps, read at `now` (time.monotonic); True when the job hangs: the supervisor then
        collects every rank's stack, hands them to `stacks` and stops the job."""
        ...

    def stacks(self, stacks: dict[int, RankStack]) -> None:
        """Every running rank's stack, collected after a hang or on request (request_stacks)."""
        ...


def decode(raw: bytes) -> int | None:
    """The step in a slot's bytes, or None when there is none (all zeros, a torn read, a short read)."""
    if len(raw) < SLOT.size:
        return None
    step, check = SLOT.unpack_from(raw)
    return step if check == ~step else None


class ProgressBoard:
    """The progress slots of one node's ranks: made before the workers start, closed when the job ends."""

    def __init__(self, ranks: list[int]):
        self.fds: dict[int, int] = {}
        for rank in ranks:
            fd = self.fds[rank] = os.memfd_create(f"{MEMFD_NAME}-rank{rank}", os.MFD_CLOEXEC)
            os.ftruncate(fd, SLOT.size)  # zeros: nothing reported
        self._last: Steps = {rank: None for rank in ranks}

    def env(self, rank: int) -> dict[str, str]:
        return {PROGRESS_ENV: str(self.fds[rank])}

    def pass_fds(self, rank: int) -> tuple[int, ...]:
        """What the rank's Popen must pass on (the one descriptor named in its environment)."""
        return (self.fds[rank],)

    def read(self) -> Steps:
        """Every rank's step; a rank whose slot shows no news keeps the step read before."""
        for rank, fd in self.fds.items():
            step = decode(os.pread(fd, SLOT.size, 0))
            if step is not None:
                self._last[rank] = step
        return dict(self._last)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
