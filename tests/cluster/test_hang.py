"""--hang-timeout over SSH on 2 namespace hosts, one rank each (tests/e2e/hang_worker.py with torch and gloo): the
agents relay the steps, the launcher names the rank behind with its host, step and line, writes the stacks to the
log dir on this machine, stops both hosts and exits with 124. The same through Slurm's srun and its node agent.

Run from a git worktree, the remote agents must import that tree's dsrun: pass --remote-python a wrapper that sets
PYTHONPATH (the Slurm agent inherits the launcher's environment and needs nothing)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pids import kill_survivors, recorded, running

WORKER = Path(__file__).resolve().parents[1] / "e2e" / "hang_worker.py"


@pytest.fixture
def job_dir(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    (tmp_path / ".dsrun_env").write_text(f"PID_DIR={pids}\n")
    yield tmp_path
    alive = kill_survivors(pids)
    assert not alive, f"workers left behind: {alive}"


def test_a_rank_behind_on_another_host_is_named_and_every_host_stopped(idle_cluster, job_dir):
    logs = job_dir / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "dsrun", "-H", str(idle_cluster.hostfile(1)), "--hang-timeout", "3", "--log-dir",
         str(logs), "--no_local_rank", str(WORKER), "behind"],
        capture_output=True, text=True, timeout=120, env={**idle_cluster.env(), "NO_COLOR": "1"}, cwd=job_dir,
    )
    assert result.returncode == 124, result.stderr
    report = result.stderr[result.stderr.index("dsrun: hang"):]
    assert "the ranks disagree on the step; rank 1 made no progress for 3 s" in report
    assert re.search(r"^  rank 1 on h2 at step 2 in stuck_in_my_own_code \(hang_worker\.py:\d+\)$", report, re.M)
    assert re.search(r"^  rank 0 on h1 at step 3 in all_reduce <- engine\.backward <- hang_worker\.py:\d+$", report,
                     re.M)
    (stacks,) = logs.glob("hang-stacks-*.txt")
    assert "=== rank 1 on h2 at step 2 (stack by faulthandler) ===" in stacks.read_text()
    pids = recorded(job_dir / "pids")
    assert len(pids) == 2 and not [pid for pid in pids if running(pid)]


def test_a_hang_under_slurm_is_reported_through_the_agent(slurm, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    try:  # even when dsrun misses the hang and the run times out, its workers are stopped
        result = subprocess.run(
            ["salloc", "-N1", "-n2", sys.executable, "-m", "dsrun", "--launcher", "slurm", "--hang-timeout", "3",
             "--no_local_rank", str(WORKER), "collective"],
            capture_output=True, text=True, timeout=120, env={**slurm.env(), "NO_COLOR": "1", "PID_DIR": str(pids)},
            cwd=tmp_path,
        )
        assert result.returncode == 124, result.stderr  # salloc passes dsrun's exit code on
        report = result.stderr[result.stderr.index("dsrun: hang"):]
        assert "no rank made progress for 3 s, all at step 3" in report
        assert re.search(rf"^  rank 1 on {slurm.node} at step 3 in recv <- hang_worker\.py:\d+$", report, re.M)
        assert re.search(r"^full stacks of every rank: /\S+/hang-stacks-\S+\.txt$", report, re.M)
        workers = recorded(pids)
        assert len(workers) == 2 and not [pid for pid in workers if running(pid)]
    finally:
        kill_survivors(pids)
