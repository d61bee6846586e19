"""--hang-timeout on a real 2-rank job (tests/e2e/hang_worker.py): the report names each rank's step and line (or
the rank that never came to the rendezvous), the full stacks land in the log dir, dsrun exits with 124 and no
worker is left; a script without steps is left alone."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pids import recorded, running

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).with_name("hang_worker.py")


def line_of(marker: str) -> int:
    return next(i for i, line in enumerate(WORKER.read_text().splitlines(), 1) if line.rstrip().endswith(marker))


def dsrun(pid_dir, *args):
    env = {**os.environ, "PID_DIR": str(pid_dir), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", *args],
                          capture_output=True, text=True, timeout=120, env=env)


# The line where each rank waits, and its step: rank 1 stopped before its step 3, rank 0 waits for it in step 4's
# all-reduce (the engine's backward, called from the worker's training loop).
BACKWARD = rf"at step 3 in all_reduce <- engine\.backward <- hang_worker\.py:{line_of('# BACKWARD')}"
EXPECTED = {
    "behind": [r"the ranks disagree on the step; rank 1 made no progress for 2 s",
               rf"  rank 1 at step 2 in stuck_in_my_own_code \(hang_worker\.py:{line_of('# SLEEPING')}\)",
               rf"  rank 0 {BACKWARD}"],
    "collective": [r"no rank made progress for 2 s, all at step 3",
                   rf"  rank 0 {BACKWARD}",
                   rf"  rank 1 at step 3 in recv <- hang_worker\.py:{line_of('# HANG-COLLECTIVE')}"],
    "late": [r"rank 1 never came to the rendezvous \(init_distributed\) in 2 s; the others wait there",
             r"  rank 1 not at the rendezvous: no stack: its process does not take SIGUSR1 .*|"
             r"  rank 1 not at the rendezvous in stuck_in_my_own_code",  # the second with py-spy installed
             r"  rank 0 in the rendezvous in \S+ <- initialize\.initialize <- "
             rf"hang_worker\.py:{line_of('# RENDEZVOUS')}"],
}


@pytest.mark.parametrize("mode", ["behind", "collective", "late"])
def test_a_hang_is_reported_with_each_ranks_step_and_line_and_the_job_is_torn_down(mode, pid_dir, tmp_path):
    logs = tmp_path / "logs"
    result = dsrun(pid_dir, "--hang-timeout", "2", "--log-dir", str(logs), str(WORKER), mode)
    assert result.returncode == 124, result.stderr
    report = result.stderr[result.stderr.index("dsrun: hang"):]
    for pattern in EXPECTED[mode]:
        assert re.search(pattern, report, re.MULTILINE), f"{pattern!r} not in:\n{report}"
    stacks = list(logs.glob("hang-stacks-*.txt"))
    assert len(stacks) == 1 and f"full stacks of every rank: {stacks[0]}" in report
    text = stacks[0].read_text()
    assert "=== rank 0 " in text and "=== rank 1 " in text
    if mode != "late":
        assert "=== rank 0 at step 3 (stack by faulthandler) ===" in text
        assert f'hang_worker.py", line {line_of("# BACKWARD")} in train' in text
    assert "Current thread" not in result.stdout + result.stderr[:result.stderr.index("dsrun: hang")], \
        "the stacks go to the report and its file, not to the console"
    assert "exits with code 124" in report
    pids = recorded(pid_dir)
    assert len(pids) == 2 and not [pid for pid in pids if running(pid)]


def test_a_script_that_never_steps_is_only_watched_for_being_alive(pid_dir):
    result = dsrun(pid_dir, "--hang-timeout", "1", str(WORKER), "plain")
    assert result.returncode == 0, result.stderr
    assert "hang" not in result.stderr


@pytest.mark.parametrize("watched", [False, True])
def test_only_a_watched_job_gives_its_workers_a_progress_slot(watched, pid_dir):
    """Not one inherited from a dsrun this one runs inside: its workers would write into another rank's slot."""
    env = {**os.environ, "PID_DIR": str(pid_dir), "NO_COLOR": "1", "DSRUN_PROGRESS_FD": "outer"}
    flags = ["--hang-timeout", "60"] if watched else []
    result = subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", *flags,
                             str(WORKER.with_name("worker.py")), "env", '["DSRUN_PROGRESS_FD"]'],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    slots = [json.loads(line.split("] ", 1)[1])["env"].get("DSRUN_PROGRESS_FD", "")
             for line in result.stdout.splitlines()]
    assert len(slots) == 2
    assert all(slot.isdigit() for slot in slots) if watched else slots == ["", ""]
