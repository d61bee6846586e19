"""dsrun's own messages: one line each on stderr, prefixed `dsrun:` (`dsrun[HOST]:` from a node agent), so they stand
apart from the workers' output, which the launcher prefixes with their rank. No torch."""

from __future__ import annotations

import sys


def say(message: str, *, host: str | None = None) -> None:
    prefix = f"dsrun[{host}]" if host else "dsrun"
    print(f"{prefix}: {message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    say(f"error: {message}")
