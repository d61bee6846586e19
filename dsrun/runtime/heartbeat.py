"""A worker's progress for its node's supervisor (--hang-timeout, --live): after every optimizer step, the step, the
samples consumed so far and, when it is at hand, this rank's loss.

`start()` (from init_distributed, before the rendezvous) maps the memory file the supervisor passed as descriptor
DSRUN_PROGRESS_FD and reports "at the rendezvous"; `joined()` (after it) reports step 0; `report(...)` (from the
engine, after every optimizer step) stores the progress there.
Storing into a shared mapping costs about a microsecond and no system call, so it is paid on every step; the slot's
format, and why the transport is what it is, are in dsrun.launcher.node.progress. Without the variable (a run that
was not started by dsrun with --hang-timeout or --live) all of them do nothing, and `active()` tells the engine
not to work out a loss for nobody. A script that never steps an engine still gets liveness: the supervisor sees
its process alive, with no step.
"""

from __future__ import annotations

import mmap
import os
import zlib

from dsrun.launcher.node.progress import (
    BODY,
    CHECK,
    JOINED,
    MEMFD_NAME,
    NO_SAMPLES,
    PROGRESS_ENV,
    RENDEZVOUS,
    SLOT_SIZE,
)

_slot: mmap.mmap | None = None
# The last loss reported and its step: a step that brings no loss (see engine._loss_for_progress) keeps showing it.
_loss: tuple[float, int] = (0.0, 0)


def _ours(fd: int) -> bool:
    """The descriptor is still the supervisor's memory file (a script may have closed it and reused the number)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:{MEMFD_NAME}")
    except OSError:
        return False


def start() -> None:
    global _slot
    value = os.environ.get(PROGRESS_ENV, "")
    if _slot is not None or not value.isdigit() or not _ours(int(value)):
        return  # progress helps the launcher watch the job; never a reason for training to fail
    fd = int(value)
    try:
        _slot = mmap.mmap(fd, SLOT_SIZE)
    except (OSError, ValueError):
        return
    os.close(fd)  # the mapping keeps the memory; the descriptor would only be inherited by forked children
    report(RENDEZVOUS)


def active() -> bool:
    """Someone reads this rank's progress."""
    return _slot is not None


def joined() -> None:
    """Through the rendezvous; a later call (a second engine's initialize) leaves the step reported alone."""
    if _slot is not None and BODY.unpack_from(_slot)[0] == RENDEZVOUS:
        report(JOINED)


def report(step: int, samples: int = NO_SAMPLES, loss: float | None = None) -> None:
    """`loss` belongs to `step`; None keeps the last loss reported, with its own step."""
    global _loss
    if _slot is None:
        return
    if loss is not None:
        _loss = (loss, step)
    body = BODY.pack(step, samples, *_loss)
    _slot[:SLOT_SIZE] = body + CHECK.pack(zlib.crc32(body))
