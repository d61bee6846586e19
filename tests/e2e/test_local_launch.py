"""Real launches of `dsrun` with 2 worker processes: env, args, exit codes, teardown, signals, logs, no orphans."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pids import recorded, running

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("worker.py"))
DSRUN = [sys.executable, "-m", "dsrun"]


def dsrun(*args, pid_dir=None, timeout=60, **kwargs):
    env = {**os.environ, "PID_DIR": str(pid_dir or ""), "NO_COLOR": "1"}
    return subprocess.run([*DSRUN, *args], capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def start(*args, pid_dir):
    env = {**os.environ, "PID_DIR": str(pid_dir), "NO_COLOR": "1"}
    return subprocess.Popen([*DSRUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_pids(directory: Path, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = recorded(directory)
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"only {len(recorded(directory))} of {count} workers started")


def test_env_and_args_reach_each_rank(pid_dir):
    wanted = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "NODE_RANK", "CROSS_RANK",
              "CROSS_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS", "DSRUN_CONFIG"]
    tricky = ["--name", "a b", "it's", 'say "hi"', "semi;colon", "$HOME"]
    config = str(REPO / "examples" / "ds_config.json")
    result = dsrun("--num_gpus", "2", "--config", config, WORKER, "env", json.dumps(wanted), *tricky, pid_dir=pid_dir)
    assert result.returncode == 0, result.stderr
    seen = {}
    for line in result.stdout.splitlines():
        prefix, _, payload = line.partition("] ")
        seen[prefix] = json.loads(payload)
    assert set(seen) == {"[rank 0", "[rank 1"}
    for rank in (0, 1):
        report = seen[f"[rank {rank}"]
        env = report["env"]
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == env["LOCAL_SIZE"] == "2"
        assert env["NODE_RANK"] == env["CROSS_RANK"] == "0" and env["CROSS_SIZE"] == "1"
        assert env["MASTER_ADDR"] == "127.0.0.1" and 0 < int(env["MASTER_PORT"]) < 65536
        assert env["DSRUN_CONFIG"] == config and int(env["OMP_NUM_THREADS"]) >= 1
        assert report["argv"] == [f"--local_rank={rank}", "env", json.dumps(wanted), *tricky]
    assert "[rank 1] stderr of rank 1" in result.stderr


def test_failing_rank_tears_down_the_rest_and_its_code_is_the_exit_code(pid_dir):
    result = dsrun("--num_gpus", "2", WORKER, "fail", "1", "3", pid_dir=pid_dir)
    assert result.returncode == 3
    assert "rank 1 on localhost failed first: exit code 3" in result.stderr
    assert "something went wrong on purpose" in result.stderr.split("failed first")[1]
    assert "--local_rank=1" in result.stderr.split("failed first")[1]
    assert not [p for p in recorded(pid_dir) if running(p)]


def test_signal_death_becomes_128_plus_signal(pid_dir):
    result = dsrun("--num_gpus", "2", WORKER, "fail", "0", str(-signal.SIGKILL), pid_dir=pid_dir)
    assert result.returncode == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in result.stderr


def test_worker_ignoring_sigterm_is_killed_after_the_grace(pid_dir):
    began = time.monotonic()
    result = dsrun("--num_gpus", "2", "--shutdown-timeout", "1", WORKER, "ignore-term", pid_dir=pid_dir)
    assert result.returncode == 5
    assert "SIGKILL" in result.stderr
    assert time.monotonic() - began < 30
    assert not [p for p in recorded(pid_dir) if running(p)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_launcher_is_forwarded_and_nothing_survives(pid_dir, sig):
    launcher = start("--num_gpus", "2", WORKER, "sleep", pid_dir=pid_dir)
    workers = wait_for_pids(pid_dir, 2)
    time.sleep(0.3)  # let the workers install their handlers
    launcher.send_signal(sig)
    out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 128 + sig
    assert f"received {signal.Signals(sig).name}" in err
    assert {f"[rank {r}] rank {r} got {signal.Signals(sig).name}" for r in (0, 1)} <= set(out.splitlines())
    assert not [p for p in workers if running(p)]


def test_sigkilled_launcher_takes_its_workers_along(pid_dir):
    launcher = start("--num_gpus", "2", WORKER, "sleep", pid_dir=pid_dir)
    workers = wait_for_pids(pid_dir, 2)
    launcher.kill()
    launcher.communicate(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [p for p in workers if running(p)]:
        time.sleep(0.05)
    assert not [p for p in workers if running(p)]


def test_helpers_left_behind_by_workers_are_stopped(pid_dir):
    result = dsrun("--num_gpus", "2", WORKER, "leave-orphan", pid_dir=pid_dir)
    assert result.returncode == 0, result.stderr
    helpers = [int(f.read_text()) for f in pid_dir.glob("*-child.pid")]
    assert len(helpers) == 2 and not [p for p in helpers if running(p)]
    assert "left 2 process(es) behind" in result.stderr


def test_log_dir_gets_one_file_per_rank_and_quiet_silences_the_console(pid_dir, tmp_path):
    logs = tmp_path / "logs"
    result = dsrun("--num_gpus", "2", "--log-dir", str(logs), "--quiet", WORKER, "lines", "3", pid_dir=pid_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    for rank in (0, 1):
        lines = (logs / f"rank{rank}.log").read_text().splitlines()
        assert [line.split()[1] for line in lines] == ["line=0", "line=1", "line=2"]
        assert all(line.startswith(f"rank={rank} ") for line in lines)


def test_lines_from_two_ranks_never_mix(pid_dir):
    result = dsrun("--num_gpus", "2", WORKER, "lines", "3000", pid_dir=pid_dir)
    assert result.returncode == 0, result.stderr
    pattern = re.compile(r"\[rank (\d)\] rank=(\d) line=(\d+) x{300}")
    counts = {"0": 0, "1": 0}
    for line in result.stdout.splitlines():
        match = pattern.fullmatch(line)
        assert match and match[1] == match[2], line[:120]
        assert int(match[3]) == counts[match[1]]  # in order, none lost
        counts[match[1]] += 1
    assert counts == {"0": 3000, "1": 3000}


def test_bind_cores_to_rank_gives_each_rank_its_own_cores(pid_dir):
    result = dsrun("--num_gpus", "2", "--bind_cores_to_rank", WORKER, "affinity", pid_dir=pid_dir)
    assert result.returncode == 0, result.stderr
    reports = [json.loads(line.partition("] ")[2]) for line in sorted(result.stdout.splitlines())]
    per_rank = len(os.sched_getaffinity(0)) // 2
    assert [len(r["cores"]) for r in reports] == [per_rank, per_rank]
    assert not set(reports[0]["cores"]) & set(reports[1]["cores"])
    assert [r["omp"] for r in reports] == [str(per_rank)] * 2


def test_console_script_dry_run_json():
    dsrun_bin = Path(sys.executable).with_name("dsrun")
    result = subprocess.run([str(dsrun_bin), "--dry-run", "--json", "--num_gpus", "2", WORKER],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["world_size"] == 2


def test_bundled_example_trains_with_falling_loss():
    result = dsrun("--num_gpus", "2", "examples/train.py", "--deepspeed_config", "examples/ds_config.yaml",
                   cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    losses = [float(m) for m in re.findall(r"\[rank 0\] dsrun: step +\d+ loss ([\d.]+)", result.stderr)]
    assert len(losses) >= 3 and losses[-1] < losses[0] / 2, result.stderr
    assert "[rank 0] done: 40 steps, 2560 samples, train_batch_size 64" in result.stdout


FAILING = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the teardown must not stop a rank before it fails by itself
time.sleep(0.5)
rank = int(os.environ["RANK"])
errors = MAPPING
raise errors[rank]
"""


@pytest.mark.parametrize(("mapping", "expected"), [
    ('{0: ValueError("bad value"), 1: ValueError("bad value")}', ["ranks 0-1 failed with the same error"]),
    # Either rank may fail first; the other's error is listed after it.
    ('{0: ValueError("bad value"), 1: KeyError("missing")}', ["failed with another error: ", "KeyError: 'missing'"]),
])  # fmt: skip
def test_several_failing_ranks_report_each_error_once(tmp_path, mapping, expected):
    script = tmp_path / "fails.py"
    script.write_text(FAILING.replace("MAPPING", mapping))
    result = dsrun("--num_gpus", "2", "--no_local_rank", "--shutdown-timeout", "30", str(script))
    assert result.returncode == 1, result.stderr
    report = result.stderr[result.stderr.index("failed first:"):]
    for text in expected:
        assert text in report, report
    assert report.count("\n    ValueError: bad value") == 1, report  # one copy of the traceback per error
