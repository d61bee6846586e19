"""--launcher slurm against a real one-machine Slurm cluster (munged + slurmctld + slurmd): salloc and sbatch."""

import json
import subprocess
import sys
from pathlib import Path

WORKER = str(Path(__file__).resolve().parents[1] / "e2e" / "worker.py")
DSRUN = [sys.executable, "-m", "dsrun", "--launcher", "slurm"]


def test_salloc_runs_the_allocations_tasks_as_ranks(slurm, tmp_path):
    wanted = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GLOO_SOCKET_IFNAME", "SLURM_JOB_ID"]
    result = subprocess.run(["salloc", "-N1", "-n2", *DSRUN, WORKER, "env", json.dumps(wanted)],
                            capture_output=True, text=True, timeout=120, env={**slurm.env(), "NO_COLOR": "1"},
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reports = {line.split("] ")[0]: json.loads(line.split("] ", 1)[1]) for line in result.stdout.splitlines()}
    assert sorted(reports) == [f"[{slurm.node} rank 0", f"[{slurm.node} rank 1"]
    envs = [reports[f"[{slurm.node} rank {r}"]["env"] for r in (0, 1)]
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert {e["MASTER_ADDR"] for e in envs} == {slurm.node}
    assert len({e["SLURM_JOB_ID"] for e in envs}) == 1  # both ranks ran inside the one allocation's srun step
    assert {e["GLOO_SOCKET_IFNAME"] for e in envs} == {"lo"}  # the node's name resolves to loopback here


def test_sbatch_job_reports_the_failing_rank(slurm, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\n#SBATCH -N1 -n2\nexec {' '.join(DSRUN)} {WORKER} fail 1 7\n")
    result = subprocess.run(["sbatch", "--wait", "-o", str(tmp_path / "out.txt"), str(script)],
                            capture_output=True, text=True, timeout=120, env={**slurm.env(), "NO_COLOR": "1"},
                            cwd=tmp_path)
    output = (tmp_path / "out.txt").read_text()
    assert result.returncode == 7, output
    assert f"rank 1 on {slurm.node} failed first: exit code 7" in output
    assert "something went wrong on purpose" in output


def test_every_failing_rank_of_an_allocation_is_in_the_report(slurm, tmp_path):
    # Rank 1 fails after rank 0, with another error: its own report comes through the agent's `done` event.
    result = subprocess.run(["salloc", "-N1", "-n2", *DSRUN, "--shutdown-timeout", "30", WORKER, "fail-alike"],
                            capture_output=True, text=True, timeout=120, env={**slurm.env(), "NO_COLOR": "1"},
                            cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    report = result.stderr[result.stderr.index("failed first:"):]
    assert f"rank 0 on {slurm.node} failed first: exit code 1" in result.stderr
    assert "ValueError: bad value" in report and "rank 1 failed with another error: KeyError: 'missing'" in report


def test_dry_run_in_an_allocation_shows_the_srun_command(slurm, tmp_path):
    result = subprocess.run(["salloc", "-N1", "-n2", *DSRUN, "--dry-run", "--json", WORKER],
                            capture_output=True, text=True, timeout=120, env=slurm.env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["launcher"] == "slurm" and plan["world_size"] == 2
    srun = plan["remote"]["srun"]
    assert srun[0] == "srun" and f"--nodelist={slurm.node}" in srun and "--ntasks-per-node=1" in srun
    assert srun[-4:] == ["-u", "-m", "dsrun.launcher.node", "--slurm"]


def test_sigterm_to_dsrun_in_an_allocation_stops_the_step(slurm, tmp_path):
    import signal

    import psutil

    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen(["salloc", "-N1", "-n2", *DSRUN, WORKER, "sleep"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**slurm.env(), "NO_COLOR": "1", "PID_DIR": str(pids)})
    ready = 0
    while ready < 2:  # "ready" comes after a worker installed its signal handlers
        line = proc.stdout.readline()
        assert line, "dsrun ended before its workers were ready"
        ready += line.rstrip("\n").endswith("] ready")
    workers = [int(p.read_text()) for p in pids.glob("*.pid")]
    dsrun = next(p for p in psutil.Process(proc.pid).children() if "dsrun" in p.cmdline())
    dsrun.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err  # salloc passes dsrun's exit code on
    assert f"dsrun[{slurm.node}]: received SIGTERM; stopping all ranks" in err and "got SIGTERM" in out
    assert len(workers) == 2 and not [pid for pid in workers if psutil.pid_exists(pid)]
