"""Each worker's progress, as its node's supervisor sees it (the worker side is dsrun.runtime.heartbeat).

The supervisor makes one small anonymous memory file per rank (memfd_create) and hands it to the worker as an
inherited file descriptor named in DSRUN_PROGRESS_FD; the worker maps it and rewrites it after every optimizer
step. Why a shared mapping: a store into memory is no system call and never blocks, whatever the supervisor is
doing (a pipe fills up when its reader stalls, and then the training step would wait for the launcher); rewriting
a file atomically (write a temporary file, rename it) costs several system calls and a directory update per step
(measured: ~20 us against ~1 us for this slot, ~0.2 us for the 16-byte step-only slot it replaced; see
bench/live_cost.py). Why a memfd and not a file on /dev/shm: it has no name, so nothing is left behind even when
dsrun is killed with SIGKILL, and nothing else can open it.

The slot (SLOT_SIZE = 40 bytes, little-endian):
  offset  0  int64    step       the last optimizer step, or RENDEZVOUS / JOINED below
  offset  8  int64    samples    samples the job has consumed (the engine's global_samples), NO_SAMPLES if unknown
  offset 16  float64  loss       this rank's loss (mean over the step's micro-batches); meaningful only with...
  offset 24  int64    loss_step  ...the step that loss belongs to: 0 when there is none
  offset 32  uint64   check      CRC-32 of bytes 0-31
The worker writes no time: the supervisor reads every slot when it polls and timestamps a change with its own
clock. The check word makes a torn read (the worker writing while we read: any mix of old and new bytes) or the
all-zero slot as created ("nothing reported yet") show as "no news", never as a wrong value.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import NamedTuple, Protocol

from dsrun.launcher.node.stacks import RankStack

PROGRESS_ENV = "DSRUN_PROGRESS_FD"
MEMFD_NAME = "dsrun-progress"  # the worker checks the descriptor it is given is one of ours
BODY = struct.Struct("<qqdq")  # step, samples, loss, loss_step
CHECK = struct.Struct("<Q")
SLOT_SIZE = BODY.size + CHECK.size

# What a slot's step holds besides optimizer steps (1, 2, ...; an engine resumed from a checkpoint starts higher).
RENDEZVOUS = -1  # in init_distributed, waiting for the other ranks
JOINED = 0  # through the rendezvous, no optimizer step yet
NO_SAMPLES = -1
# A rank that reported nothing (not through dsrun's runtime, or not at the rendezvous yet) has no step.
Steps = dict[int, int | None]


class Progress(NamedTuple):
    step: int
    samples: int  # NO_SAMPLES when the worker did not say
    loss: float  # only when loss_step > 0
    loss_step: int


def encode(progress: Progress) -> bytes:
    body = BODY.pack(*progress)
    return body + CHECK.pack(zlib.crc32(body))


def decode(raw: bytes) -> Progress | None:
    """The progress in a slot's bytes, or None when there is none (all zeros, a torn read, a short read)."""
    if len(raw) < SLOT_SIZE:
        return None
    body = raw[:BODY.size]
    if CHECK.unpack_from(raw, BODY.size)[0] != zlib.crc32(body):
        return None
    return Progress(*BODY.unpack(body))


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


class ProgressBoard:
    """The progress slots of one node's ranks: made before the workers start, closed when the job ends."""

    def __init__(self, ranks: list[int]):
        self.fds: dict[int, int] = {}
        for rank in ranks:
            fd = self.fds[rank] = os.memfd_create(f"{MEMFD_NAME}-rank{rank}", os.MFD_CLOEXEC)
            os.ftruncate(fd, SLOT_SIZE)  # zeros: nothing reported
        self._last: dict[int, Progress | None] = {rank: None for rank in ranks}

    def env(self, rank: int) -> dict[str, str]:
        return {PROGRESS_ENV: str(self.fds[rank])}

    def pass_fds(self, rank: int) -> tuple[int, ...]:
        """What the rank's Popen must pass on (the one descriptor named in its environment)."""
        return (self.fds[rank],)

    def read_all(self) -> dict[int, Progress | None]:
        """Every rank's progress; a rank whose slot shows no news keeps what was read before."""
        for rank, fd in self.fds.items():
            progress = decode(os.pread(fd, SLOT_SIZE, 0))
            if progress is not None:
                self._last[rank] = progress
        return dict(self._last)

    def read(self) -> Steps:
        """Every rank's step (what the hang watch needs)."""
        return {rank: None if p is None else p.step for rank, p in self.read_all().items()}

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
