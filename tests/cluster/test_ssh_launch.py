"""dsrun over SSH on 2 real hosts (network namespaces with their own sshd), 2 workers each: env and output,
teardown on a failing remote rank, on SIGTERM to the launcher and on a killed SSH connection, pre-flight errors.

The workers are tests/e2e/worker.py (plain python); only test_training.py imports torch.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.pids import kill_survivors, recorded, running

WORKER = str(Path(__file__).resolve().parents[1] / "e2e" / "worker.py")


@pytest.fixture
def job_dir(tmp_path):
    """The launch directory: its .dsrun_env tells workers (on every host) where to record their pids."""
    pids = tmp_path / "pids"
    pids.mkdir()
    (tmp_path / ".dsrun_env").write_text(f"# shipped to every host\nexport PID_DIR={pids}\n\nFROM_ENV_FILE='a b'\n")
    yield tmp_path
    alive = kill_survivors(pids)
    assert not alive, f"workers left behind: {alive}"


def dsrun_cmd(cluster, *args):
    return [sys.executable, "-m", "dsrun", "-H", str(cluster.hostfile(2)), *args]


def run(cluster, job_dir, *args, extra_env=None, timeout=60):
    env = {**cluster.env(), "NO_COLOR": "1", **(extra_env or {})}
    return subprocess.run(dsrun_cmd(cluster, *args), capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=job_dir)


def start(cluster, job_dir, *args):
    env = {**cluster.env(), "NO_COLOR": "1"}
    return subprocess.Popen(dsrun_cmd(cluster, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=job_dir)


def wait_until_ready(proc: subprocess.Popen, count: int) -> None:
    """Read dsrun's stdout until `count` workers said "ready" (their signal handlers are installed by then)."""
    seen = 0
    while seen < count:
        line = proc.stdout.readline()
        assert line, "dsrun ended before its workers were ready"
        seen += line.rstrip("\n").endswith("] ready")


def wait_for_workers(job_dir: Path, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = recorded(job_dir / "pids")
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"only {len(recorded(job_dir / 'pids'))} of {count} workers started")


def finish(proc: subprocess.Popen, timeout: float = 30):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"dsrun did not end within {timeout} s:\n{err}") from None
    return proc.returncode, out, err


def test_env_args_and_logs_reach_every_host(idle_cluster, job_dir):
    wanted = ["RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GLOO_SOCKET_IFNAME",
              "NCCL_SOCKET_IFNAME", "NCCL_DEBUG", "PYTHONFAULTHANDLER", "FROM_ENV_FILE", "NOT_EXPORTED"]
    tricky = ["a b", "it's", 'say "hi"', "x; touch pwned", "$(touch pwned)", "`touch pwned`"]
    result = run(idle_cluster, job_dir, "--log-dir", "logs", WORKER, "env", json.dumps(wanted), *tricky,
                 extra_env={"NCCL_DEBUG": "WARN", "PYTHONFAULTHANDLER": "1", "NOT_EXPORTED": "secret"})
    assert result.returncode == 0, result.stderr
    reports = {}
    for line in result.stdout.splitlines():
        label, _, payload = line.partition("] ")
        reports[label.lstrip("[")] = json.loads(payload)
    assert set(reports) == {"h1 rank 0", "h1 rank 1", "h2 rank 2", "h2 rank 3"}
    for label, report in reports.items():
        env, host = report["env"], label.split()[0]
        node = int(host[1:]) - 1
        assert env["RANK"] == label.split()[-1] and env["NODE_RANK"] == str(node) and env["WORLD_SIZE"] == "4"
        assert env["MASTER_ADDR"] == idle_cluster.address(1)  # h1's HostName, not its loopback name
        assert 0 < int(env["MASTER_PORT"]) < 65536
        interface = f"dsr{idle_cluster.index}p{node + 1}"  # the veth that routes to MASTER_ADDR on that host
        assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == interface
        assert env["NCCL_DEBUG"] == "WARN" and env["PYTHONFAULTHANDLER"] == "1" and env["FROM_ENV_FILE"] == "a b"
        assert "NOT_EXPORTED" not in env
        assert report["argv"][-len(tricky):] == tricky
    assert not (job_dir / "pwned").exists()
    logs = sorted(p.name for p in (job_dir / "logs").iterdir())
    assert logs == ["rank0.log", "rank1.log", "rank2.log", "rank3.log"]
    log = (job_dir / "logs" / "rank3.log").read_text().splitlines()  # stdout and stderr: order between them is free
    assert len(log) == 2 and "stderr of rank 3" in log and json.loads(next(x for x in log if x.startswith("{")))


def test_failing_remote_rank_stops_every_host(idle_cluster, job_dir):
    started = time.monotonic()
    result = run(idle_cluster, job_dir, WORKER, "fail", "3", "7")
    assert result.returncode == 7, result.stderr
    assert "rank 3 on h2 failed first: exit code 7" in result.stderr
    assert "something went wrong on purpose" in result.stderr.split("failed first")[-1]
    assert time.monotonic() - started < 15  # the other three ranks sleep 600 s unless torn down
    assert len(recorded(job_dir / "pids")) == 4


def test_ranks_failing_alike_on_several_hosts_are_reported_once(idle_cluster, job_dir):
    # Ranks 0-2 (on h1 and h2) fail with the same error, rank 3 (h2) with another: the report merges both hosts.
    result = run(idle_cluster, job_dir, "--shutdown-timeout", "30", WORKER, "fail-alike")
    assert result.returncode == 1, result.stderr
    report = result.stderr[result.stderr.index("failed first:"):]
    assert "rank 0 on h1 failed first: exit code 1" in result.stderr
    assert "ranks 0-2 failed with the same error" in report
    assert "rank 3 failed with another error: KeyError: 'missing'" in report
    assert report.count("ValueError: bad value") == 1, report  # one copy of the shared error


def test_sigterm_to_launcher_stops_remote_workers(idle_cluster, job_dir):
    proc = start(idle_cluster, job_dir, WORKER, "sleep")
    wait_until_ready(proc, 4)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err
    # Each host's agent was told and passed SIGTERM on (the worker's own "got SIGTERM" line can be lost: the
    # supervisor signals its group and the process itself, and a second handler run may interrupt the first print).
    for host in ("h1", "h2"):
        assert f"dsrun[{host}]: received SIGTERM; stopping all ranks" in err
    assert "got SIGTERM" in out


def test_sigusr1_asks_every_host_for_stacks_and_the_job_goes_on(idle_cluster, job_dir):
    proc = start(idle_cluster, job_dir, WORKER, "sleep")
    wait_until_ready(proc, 4)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(3)  # the agents relay it; their workers do not catch SIGUSR1, so they must not be sent it
    assert proc.poll() is None, "a stack request must not stop the job"
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err
    assert "SIGUSR1: every rank's stack follows; the job goes on" in err
    for host in ("h1", "h2"):  # each agent answered for its own ranks
        assert f"dsrun[{host}]: SIGUSR1: every rank's stack follows" in err
    assert err.count("no stack: its process does not take SIGUSR1") == 4 or "(py-spy)" in err


def _agent_of(cluster, host_index: int) -> psutil.Process:
    """The node agent running in a host's namespace (the python child of that host's sshd session)."""
    from tests.cluster.hosts import netns_pids

    for pid in netns_pids(cluster.namespace(host_index)):
        try:
            proc = psutil.Process(pid)
            if "dsrun.launcher.node" in proc.cmdline():
                return proc
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no node agent on h{host_index}")


def test_killed_ssh_connection_stops_both_sides(idle_cluster, job_dir):
    proc = start(idle_cluster, job_dir, WORKER, "sleep")
    wait_for_workers(job_dir, 4)
    session = _agent_of(idle_cluster, 2).parent()  # the sshd process serving this connection on h2
    assert session.pid != idle_cluster.sshd_pid(2) and "sshd" in session.name()
    session.kill()
    code, _, err = finish(proc)
    assert code == 255, err
    assert "lost the SSH connection to h2 (node 1, ranks 2-3)" in err
    # h2's agent lost its stdin with the connection and stopped its workers; job_dir's fixture checks they are gone
    assert idle_cluster.wait_until_idle() == {}


def test_launcher_killed_outright_leaves_nothing_on_the_hosts(idle_cluster, job_dir):
    proc = start(idle_cluster, job_dir, WORKER, "sleep")
    workers = wait_for_workers(job_dir, 4)
    proc.kill()  # no chance to say goodbye: only the dropped connections tell the agents
    proc.communicate(timeout=10)
    deadline = time.monotonic() + 15
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if running(pid)]


def test_preflight_names_each_host_and_starts_nothing(idle_cluster, job_dir):
    result = run(idle_cluster, job_dir, "--remote-python", "/opt/no/python3", WORKER, "sleep")
    assert result.returncode == 2
    for host in ("h1", "h2"):
        assert f"{host}: python /opt/no/python3 is not there" in result.stderr
    assert "cannot start on 2 of 2 host(s)" in result.stderr
    result = run(idle_cluster, job_dir, "--remote-cwd", "/opt/no such dir", WORKER, "sleep")
    assert result.returncode == 2 and "h2: directory /opt/no such dir does not exist there" in result.stderr
    result = run(idle_cluster, job_dir, "--remote-python", "/usr/bin/python3", WORKER, "sleep")
    assert result.returncode == 2 and "h1: dsrun is not installed for /usr/bin/python3" in result.stderr
    result = run(idle_cluster, job_dir, "--ssh_port", "2222", "--ssh-timeout", "3", WORKER, "sleep")
    assert result.returncode == 2 and "h1: cannot reach" in result.stderr and "port 2222" in result.stderr
    assert "Traceback" not in result.stderr
    assert recorded(job_dir / "pids") == []


def test_unknown_host_key_is_refused_unless_accepted(idle_cluster, job_dir):
    known_hosts = idle_cluster.home / ".ssh" / "known_hosts"
    trusted = known_hosts.read_text()
    known_hosts.write_text(trusted.splitlines(keepends=True)[0])  # h2's key is no longer known
    try:
        result = run(idle_cluster, job_dir, WORKER, "env", "[]")
        assert result.returncode == 2
        assert f"h2: {idle_cluster.address(2)} is not a known host" in result.stderr
        assert "ssh-keyscan" in result.stderr and "--ssh-accept-new-hosts" in result.stderr
        assert "h1:" not in result.stderr
        result = run(idle_cluster, job_dir, "--ssh-accept-new-hosts", WORKER, "env", "[]")
        assert result.returncode == 0, result.stderr
        assert idle_cluster.address(2) in known_hosts.read_text()
    finally:
        known_hosts.write_text(trusted)


def test_remote_cwd_with_shell_metacharacters_is_one_directory(idle_cluster, job_dir):
    odd = job_dir / "a b;touch pwned'\"$(x)"
    odd.mkdir()
    result = run(idle_cluster, job_dir, "--remote-cwd", str(odd), "--no_python", "--no_local_rank", "/bin/pwd")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [f"[h{r // 2 + 1} rank {r}] {odd}" for r in range(4)]
    assert not (job_dir / "pwned").exists() and not (odd / "pwned").exists()


def test_key_the_host_does_not_accept_is_an_auth_error(idle_cluster, job_dir):
    home = job_dir / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(job_dir / "stranger")], check=True)
    config = (idle_cluster.home / ".ssh" / "config").read_text()
    (home / ".ssh" / "config").write_text(config.replace(str(idle_cluster.workdir / "client_key"),
                                                          str(job_dir / "stranger")))
    (home / ".ssh" / "known_hosts").write_text((idle_cluster.home / ".ssh" / "known_hosts").read_text())
    result = run(idle_cluster, job_dir, WORKER, "sleep", extra_env={"HOME": str(home)})
    assert result.returncode == 2
    assert "h1: root@" in result.stderr and "refused every key" in result.stderr and "h2: root@" in result.stderr
    assert recorded(job_dir / "pids") == []
