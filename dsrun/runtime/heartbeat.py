"""A worker's progress for its node's supervisor (--hang-timeout): the last optimizer step, after every step.

`start()` (from init_distributed) maps the file the supervisor named in DSRUN_PROGRESS_FILE and reports step 0,
"joined"; `report(step)` (from the engine, after every optimizer step) stores the step there. Storing into a
shared mapping costs well under a microsecond and no system call, so it is paid on every step; why the format and
the transport are what they are is said in dsrun.launcher.node.progress. Without the variable (a run that was not
started by dsrun with --hang-timeout) both do nothing. A script that never steps an engine still gets liveness:
the supervisor sees its process alive, with no step.
"""

from __future__ import annotations

import mmap
import os

from dsrun.launcher.node.progress import PROGRESS_ENV, SLOT

_slot: mmap.mmap | None = None


def start() -> None:
    global _slot
    path = os.environ.get(PROGRESS_ENV)
    if _slot is not None or not path:
        return
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            _slot = mmap.mmap(fd, SLOT.size)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return  # progress helps the launcher watch the job; never a reason for training to fail
    report(0)


def report(step: int) -> None:
    if _slot is not None:
        SLOT.pack_into(_slot, 0, step, ~step)
