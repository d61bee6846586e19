"""Wall time of one command, the way a user experiences it: from exec to exit, output captured."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

# Generous: a launch that hangs should fail the benchmark, not stall `make bench` forever.
TIMEOUT_SECONDS = 300


class BenchError(RuntimeError):
    """A benchmarked command failed: its timing would be meaningless, so the run stops."""


def time_command(command: list[str], cwd: Path) -> tuple[float, str]:
    """Seconds the command took and its stdout; raises BenchError unless it exited 0."""
    start = time.perf_counter()
    # Output is captured, not shown: writing to a terminal would add its own, variable cost to the measurement.
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError(f"{' '.join(command)} exited {proc.returncode} (cwd {cwd}):\n{tail}")
    return seconds, proc.stdout
