"""Launching the e2e workers under dsrun, and reading what they print: a marker word, then JSON (optionally after
the printing rank)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def launch_worker(worker: str, *args: str, ranks: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """`dsrun --num_gpus RANKS --no_local_rank tests/e2e/WORKER ARGS`, its output captured."""
    return subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", str(ranks), "--no_local_rank",
                           str(HERE / worker), *args], capture_output=True, text=True, timeout=timeout)


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


def results_by_rank(worker: str, marker: str, *args: str, ranks: int = 2, timeout: float = 300) -> dict[int, Any]:
    """Launch WORKER, check it succeeded and that every rank printed its `MARKER RANK JSON` line; that JSON by rank."""
    result = launch_worker(worker, *args, ranks=ranks, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    found = marked_by_rank(result.stdout, marker)
    assert sorted(found) == list(range(ranks)), result.stdout[-2000:]
    return found
