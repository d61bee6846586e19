"""Reading what the e2e workers print: a marker word, then JSON (optionally after the printing rank)."""

from __future__ import annotations

import json


def marked(stdout: str, marker: str):
    """The JSON after the first `MARKER ` in the output (a worker where only rank 0 prints)."""
    line = next(line for line in stdout.splitlines() if f"{marker} " in line)
    return json.loads(line.split(f"{marker} ", 1)[1])


def marked_by_rank(stdout: str, marker: str) -> dict[int, object]:
    """Every `MARKER RANK JSON` line, by rank."""
    found = {}
    for line in stdout.splitlines():
        if f"{marker} " in line:
            rank, payload = line.split(f"{marker} ", 1)[1].split(" ", 1)
            found[int(rank)] = json.loads(payload)
    return found
