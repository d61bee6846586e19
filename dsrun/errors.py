"""Errors a user can cause and fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dsrun.console import error


class UsageError(Exception):
    """Bad flag, hostfile, selector or config. The message names the problem and the fix."""

    exit_code = 2


@contextmanager
def exit_on_usage_error(speaks: bool | None = None, prefix: str = "") -> Iterator[None]:
    """In a worker: a UsageError ends the process with one line and exit code 2, the launcher's convention, instead
    of a traceback from every rank. `speaks`: whether this process prints the line (default: rank 0, as every rank
    stops; a mistake only some ranks see names who says it), after `prefix`."""
    try:
        yield
    except UsageError as err:
        if os.environ.get("RANK", "0") == "0" if speaks is None else speaks:
            error(prefix + str(err))
        raise SystemExit(err.exit_code) from None


F = TypeVar("F", bound=Callable[..., Any])


def one_line_in_workers(function: F) -> F:
    """In a worker (torch.distributed initialized) a UsageError from `function` ends the job with one line and exit
    code 2; elsewhere (tests, tools) it stays a UsageError to catch. torch is imported only when it is called."""

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            with exit_on_usage_error():
                return function(*args, **kwargs)
        return function(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
