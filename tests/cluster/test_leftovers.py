"""No leftovers on a host whose node agent is killed outright: dsrun over SSH on 2 namespace hosts, one rank each
(tests/e2e/leftovers_worker.py: children in new sessions, with empty environments, grandchildren); SIGKILL to h2's
agent leaves nothing of its rank's processes, and its watchdog ends too. The same for the agent of a Slurm step
(this cluster's proctrack/linuxproc would leave the orphans in new sessions running).

The remote agents must import this tree's dsrun (a git worktree's, not the installed one): --remote-python is a
wrapper that sets PYTHONPATH."""

import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.cluster.hosts import netns_pids
from tests.pids import kill_survivors, recorded, running

REPO = Path(__file__).resolve().parents[2]
WORKER = str(REPO / "tests" / "e2e" / "leftovers_worker.py")
PIDS_PER_RANK = 7  # the worker and the 6 processes it starts


def python_wrapper(directory: Path) -> Path:
    wrapper = directory / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def agent_of(cluster, host_index: int) -> psutil.Process:
    for pid in netns_pids(cluster.namespace(host_index)):
        try:
            proc = psutil.Process(pid)
            if "dsrun.launcher.node" in proc.cmdline():
                return proc
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no node agent on h{host_index}")


def wait_until_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while [pid for pid in pids if running(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if running(pid)]


def test_an_agent_killed_outright_leaves_nothing_on_its_host(idle_cluster, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    (tmp_path / ".dsrun_env").write_text(f"PID_DIR={pids}\n")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "dsrun", "-H", str(idle_cluster.hostfile(1)), "--remote-python",
         str(python_wrapper(tmp_path)), "--no_local_rank", WORKER],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**idle_cluster.env(), "NO_COLOR": "1"},
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while len(recorded(pids)) < 2 * PIDS_PER_RANK:
            assert launcher.poll() is None, launcher.communicate()[1]
            assert time.monotonic() < deadline, f"only {len(recorded(pids))} processes started"
            time.sleep(0.05)
        agent = agent_of(idle_cluster, 2)
        (watchdog,) = [p for p in agent.children() if "watchdog.py" in " ".join(p.cmdline())]
        on_h2 = [int(f.read_text()) for f in pids.glob("rank1-*.pid")]  # rank 1 runs on h2
        assert len(on_h2) == PIDS_PER_RANK
        agent.kill()
        assert wait_until_gone(on_h2) == [], "processes of h2's rank survived its agent's SIGKILL"
        assert wait_until_gone([watchdog.pid]) == [], "h2's watchdog outlived the job"
        _, err = launcher.communicate(timeout=30)
        assert launcher.returncode != 0, err  # h2 was lost: the job failed, and h1 was stopped
    finally:
        launcher.kill()
        launcher.communicate()
        alive = kill_survivors(pids)
        assert not alive, f"left behind: {alive}"


def test_a_slurm_agent_killed_outright_leaves_nothing(slurm, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    launcher = subprocess.Popen(
        ["salloc", "-N1", "-n2", sys.executable, "-m", "dsrun", "--launcher", "slurm", "--no_local_rank", WORKER],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**slurm.env(), "NO_COLOR": "1", "PID_DIR": str(pids)},  # the Slurm agent inherits dsrun's environment
    )
    try:
        deadline = time.monotonic() + 60
        while len(recorded(pids)) < 2 * PIDS_PER_RANK:
            assert launcher.poll() is None, launcher.communicate()[1]
            assert time.monotonic() < deadline, f"only {len(recorded(pids))} processes started"
            time.sleep(0.05)
        agent = psutil.Process(int((pids / "rank0-worker.pid").read_text())).parent()
        assert "dsrun.launcher.node" in agent.cmdline()
        (watchdog,) = [p for p in agent.children() if "watchdog.py" in " ".join(p.cmdline())]
        job = recorded(pids)
        agent.kill()
        assert wait_until_gone(job) == [], "processes of the job survived its Slurm agent's SIGKILL"
        assert wait_until_gone([watchdog.pid]) == [], "the watchdog outlived the job"
        _, err = launcher.communicate(timeout=60)
        assert launcher.returncode != 0, err
    finally:
        launcher.kill()
        launcher.communicate()
        alive = kill_survivors(pids)
        assert not alive, f"left behind: {alive}"
