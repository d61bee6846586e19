"""The node agent's side of --hang-timeout (what runs on every host over SSH and Slurm), without SSH: it relays its
ranks' steps as `progress` events and answers a collect request with a `stacks` event, and the job goes on."""

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsrun.launcher.node.protocol import NodeJob, collect_line, jobs_line, parse_event
from dsrun.launcher.plan.world import RankPlan
from tests.pids import kill_survivors, recorded, running

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("progress_worker.py"))


def events(proc: subprocess.Popen, wanted: str, seconds: float = 30.0) -> dict:
    """Read the agent's stderr until an event of kind `wanted` arrives."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            assert line, "the agent ended early"
            event = parse_event(line.decode().rstrip("\n"))
            if event is not None and event["event"] == wanted:
                return event
    raise AssertionError(f"no {wanted} event within {seconds} s")


def test_the_agent_relays_steps_and_answers_a_collect_request(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    ranks = [RankPlan(rank, rank, 0, "localhost", rank, {"RANK": str(rank)}, [sys.executable, WORKER, str(step)],
                      None) for rank, step in ((0, 5), (1, 7))]
    job = NodeJob(0, "localhost", ranks, {"PID_DIR": str(pids)}, "127.0.0.1", 5.0, report_progress=True)
    proc = subprocess.Popen([sys.executable, "-m", "dsrun.launcher.node"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    try:
        events(proc, "hello")
        proc.stdin.write(jobs_line([job]))
        proc.stdin.flush()
        while events(proc, "progress")["steps"] != {"0": 5, "1": 7}:
            pass
        proc.stdin.write(collect_line())
        proc.stdin.flush()
        stacks = events(proc, "stacks")["stacks"]
        assert set(stacks) == {"0", "1"}
        for stack in stacks.values():
            assert stack["how"] == "faulthandler" and 'progress_worker.py", line' in stack["text"]
            assert "in wait_here" in stack["text"]
        assert proc.poll() is None, "collecting stacks must not stop the job"
        proc.stdin.close()  # the launcher went away: the agent stops its job
        assert proc.wait(timeout=30) != 0
        assert len(recorded(pids)) == 2 and not [pid for pid in recorded(pids) if running(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_survivors(pids)
