"""A worker's progress for its node's supervisor (--hang-timeout): the last optimizer step, after every step.

`start()` (from init_distributed, before the rendezvous) maps the memory file the supervisor passed as descriptor
DSRUN_PROGRESS_FD and reports "at the rendezvous"; `joined()` (after it) reports step 0; `report(step)` (from the
engine, after every optimizer step) stores the step there.
Storing into a shared mapping costs well under a microsecond and no system call, so it is paid on every step; why
the format and the transport are what they are is said in dsrun.launcher.node.progress. Without the variable (a
run that was not started by dsrun with --hang-timeout) both do nothing. A script that never steps an engine still
gets liveness: the supervisor sees its process alive, with no step.
"""

from __future__ import annotations

import mmap
import os

from dsrun.launcher.node.progress import JOINED, MEMFD_NAME, PROGRESS_ENV, RENDEZVOUS, SLOT

_slot: mmap.mmap | None = None


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
        _slot = mmap.mmap(fd, SLOT.size)
    except (OSError, ValueError):
        return
    os.close(fd)  # the mapping keeps the memory; the descriptor would only be inherited by forked children
    report(RENDEZVOUS)


def joined() -> None:
    """Through the rendezvous; a later call (a second engine's initialize) leaves the step reported alone."""
    if _slot is not None and SLOT.unpack_from(_slot)[0] == RENDEZVOUS:
        report(JOINED)


def report(step: int) -> None:
    if _slot is not None:
        SLOT.pack_into(_slot, 0, step, ~step)
