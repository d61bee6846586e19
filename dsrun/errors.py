"""Errors a user can cause and fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from dsrun.console import error


class UsageError(Exception):
    """Bad flag, hostfile, selector or config. The message names the problem and the fix."""

    exit_code = 2


@contextmanager
def exit_on_usage_error() -> Iterator[None]:
    """In a worker: a UsageError ends the process with one line (printed by rank 0, as every rank stops) and exit
    code 2, the launcher's convention, instead of a traceback from every rank."""
    try:
        yield
    except UsageError as err:
        if os.environ.get("RANK", "0") == "0":
            error(str(err))
        raise SystemExit(err.exit_code) from None
