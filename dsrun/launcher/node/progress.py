"""Each worker's last optimizer step, as its node's supervisor sees it (the worker side is dsrun.runtime.heartbeat).

The supervisor creates one 16-byte file per rank in a private directory on a tmpfs and names it in
DSRUN_PROGRESS_FILE; the worker maps the file into memory and stores `(step, ~step)` in it after every optimizer
step. Why a shared mapping: a store into memory is no system call and never blocks, whatever the supervisor is
doing (a pipe fills up when its reader stalls, and then the training step would wait for the launcher); rewriting a
file atomically (write a temporary file, rename it) costs several system calls and a directory update per step.
The worker writes no time: the supervisor reads every file when it polls and timestamps a change with its own
clock. The check word (~step) makes a torn read (the worker writing while we read) or the all-zero file as created
("nothing reported yet") show as "no news", never as a wrong step.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Protocol

from dsrun.launcher.node.stacks import RankStack

PROGRESS_ENV = "DSRUN_PROGRESS_FILE"
SLOT = struct.Struct("<qq")  # step, ~step

# A rank that reported nothing (not through dsrun's runtime, or not yet initialised) has no step.
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


def _scratch() -> str | None:
    """/dev/shm when there is one: memory, so the page the workers write is never written back to a disk."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def decode(raw: bytes) -> int | None:
    """The step in a slot's bytes, or None when there is none (all zeros, a torn read, a short file)."""
    if len(raw) < SLOT.size:
        return None
    step, check = SLOT.unpack_from(raw)
    return step if check == ~step else None


class ProgressBoard:
    """The progress files of one node's ranks: created before the workers start, removed when the job ends."""

    def __init__(self, ranks: list[int]):
        self.directory = Path(tempfile.mkdtemp(prefix="dsrun-progress-", dir=_scratch()))
        self.paths = {rank: self.directory / f"rank{rank}" for rank in ranks}
        for path in self.paths.values():
            path.write_bytes(bytes(SLOT.size))
        self._last: Steps = {rank: None for rank in ranks}

    def env(self, rank: int) -> dict[str, str]:
        return {PROGRESS_ENV: str(self.paths[rank])}

    def read(self) -> Steps:
        """Every rank's step; a rank whose file shows no news keeps the step read before."""
        for rank, path in self.paths.items():
            try:
                with open(path, "rb") as slot:
                    step = decode(slot.read(SLOT.size))
            except OSError:
                step = None
            if step is not None:
                self._last[rank] = step
        return dict(self._last)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
