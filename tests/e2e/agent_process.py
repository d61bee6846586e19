"""A node agent (`python -m dsrun.launcher.node`, what runs on every host over SSH and Slurm) started without SSH,
with a two-rank job of progress_worker.py, and its events read from its stderr."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from dsrun.launcher.node.protocol import NodeJob, parse_event
from dsrun.launcher.plan.world import RankPlan

WORKER = str(Path(__file__).with_name("progress_worker.py"))


def two_rank_job(pids: Path, **flags: bool) -> NodeJob:
    """Ranks 0 and 1 report steps 5 and 7, then wait; `flags` are NodeJob's (report_progress, report_live)."""
    ranks = [RankPlan(rank, rank, 0, "localhost", rank, {"RANK": str(rank)}, [sys.executable, WORKER, str(step)],
                      None) for rank, step in ((0, 5), (1, 7))]
    return NodeJob(0, "localhost", ranks, {"PID_DIR": str(pids)}, "127.0.0.1", 5.0, **flags)


def start_agent() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dsrun.launcher.node"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})


def next_event(proc: subprocess.Popen, wanted: str | None = None, seconds: float = 30.0) -> dict:
    """The agent's next event (of kind `wanted`, when given: others are skipped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.5)[0]:
            line = proc.stderr.readline()
            assert line, "the agent ended early"
            event = parse_event(line.decode().rstrip("\n"))
            if event is not None and wanted in (None, event["event"]):
                return event
    raise AssertionError(f"no {wanted or ''} event within {seconds} s")
