"""No leftovers, ever: dsrun killed outright (SIGKILL, no chance to clean up) leaves nothing of its job running, not
even processes its workers started in new sessions or with an empty environment; its watchdog ends too. A normal
end leaves no watchdog behind either. Workers: tests/e2e/leftovers_worker.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.pids import recorded, running

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("leftovers_worker.py"))
KINDS = ("worker", "child", "session", "bare", "middle", "grandchild", "bare-session")
PIDS = 2 * len(KINDS)  # 2 ranks
DEADLINE = 10.0


def start(pid_dir: Path) -> subprocess.Popen:
    """dsrun with its stderr in a file: a pipe would make waiting for dsrun wait for the watchdog as well (it
    writes to dsrun's stderr), and hide whether dsrun waited for it. dsrun leads its own process group, as it
    would in a shell: a terminal's Ctrl-C goes to that group."""
    env = {**os.environ, "PID_DIR": str(pid_dir), "NO_COLOR": "1"}
    with open(pid_dir.parent / "stderr.txt", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "dsrun", "--num_gpus", "2", WORKER],
                                stdout=subprocess.DEVNULL, stderr=stderr, env=env, process_group=0)


def stderr_of(pid_dir: Path) -> str:
    return (pid_dir.parent / "stderr.txt").read_text()


def wait_until_started(launcher: subprocess.Popen, pid_dir: Path) -> tuple[list[int], int]:
    """The pids of everything the workers started, once all are recorded, and dsrun's watchdog."""
    deadline = time.monotonic() + 30
    while len(recorded(pid_dir)) < PIDS:
        assert launcher.poll() is None, f"dsrun ended early: {stderr_of(pid_dir)}"
        assert time.monotonic() < deadline, f"only {len(recorded(pid_dir))} of {PIDS} processes started"
        time.sleep(0.05)
    watchdogs = [p for p in psutil.Process(launcher.pid).children() if "watchdog.py" in " ".join(p.cmdline())]
    assert len(watchdogs) == 1, "dsrun runs no watchdog"
    return recorded(pid_dir), watchdogs[0].pid


def wait_until_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + DEADLINE
    while [pid for pid in pids if running(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if running(pid)]


def test_sigkilled_dsrun_leaves_no_process_of_its_job(pid_dir):
    launcher = start(pid_dir)
    try:
        pids, watchdog = wait_until_started(launcher, pid_dir)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=10)
        survivors = wait_until_gone(pids)
        named = {pid: path.name for path in pid_dir.glob("*.pid") for pid in [int(path.read_text())]}
        assert not survivors, f"survived dsrun's SIGKILL: {[named[pid] for pid in survivors]}"
        assert wait_until_gone([watchdog]) == [], "the watchdog outlived the job"
        assert f"dsrun watchdog: dsrun (pid {launcher.pid}) ended without stopping its job" in stderr_of(pid_dir)
    finally:
        launcher.kill()
        launcher.wait()


def test_normal_end_leaves_no_watchdog_behind(pid_dir):
    launcher = start(pid_dir)
    try:
        pids, watchdog = wait_until_started(launcher, pid_dir)
        (pid_dir / "release").touch()
        assert launcher.wait(timeout=30) == 0, stderr_of(pid_dir)
        # dsrun waited for its watchdog: it is gone the moment dsrun is (no polling here on purpose)
        assert not running(watchdog)
        assert not [pid for pid in pids if running(pid)]
        # dsrun's own teardown stopped the helpers (not its watchdog: it was not one of them), and nothing was
        # left for the watchdog
        err = stderr_of(pid_dir)
        assert f"workers left {PIDS - 2} process(es) behind" in err
        assert "dsrun watchdog" not in err
    finally:
        launcher.kill()
        launcher.wait()


def test_ctrl_c_stops_the_job_but_never_reaches_the_watchdog(pid_dir):
    launcher = start(pid_dir)
    try:
        pids, watchdog = wait_until_started(launcher, pid_dir)
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the foreground process group
        assert launcher.wait(timeout=30) == 128 + signal.SIGINT, stderr_of(pid_dir)
        assert not running(watchdog) and not [pid for pid in pids if running(pid)]
        # In dsrun's group, the watchdog would have died of the SIGINT (a KeyboardInterrupt) while the job was
        # still being stopped, and been no guard while dsrun was.
        assert "watchdog.py" not in stderr_of(pid_dir)
    finally:
        launcher.kill()
        launcher.wait()
