"""Fault tolerance across hosts (tests/e2e/resume_worker.py: dropout, the engine's loader, checkpoint.save_dir with
save_interval 2 and auto_resume): a rank on the second host dies at step 5 and `--max_restarts` starts both hosts
again; a Slurm batch job is signalled while it trains (SIGTERM: every rank saves and stops), requeues itself and
its second run resumes. Both end with weights bit-identical to an uninterrupted run on this machine."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

WORKER = str(Path(__file__).resolve().parents[1] / "e2e" / "resume_worker.py")
STEPS = "9"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    where = tmp_path_factory.mktemp("straight")
    result = subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", WORKER,
                             str(where / "ckpt"), str(where / "weights.pt"), STEPS],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(where / "weights.pt")


def assert_same_weights(path: Path, reference: dict) -> None:
    weights = torch.load(path)
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in reference), "the resumed run ended elsewhere"


def test_max_restarts_over_ssh_resumes_exactly(idle_cluster, tmp_path, uninterrupted):
    result = subprocess.run(
        [sys.executable, "-m", "dsrun", "-H", str(idle_cluster.hostfile(1)), "--max_restarts", "1",
         "--restart-backoff", "0.5", "--no_local_rank", WORKER, str(tmp_path / "ckpt"), str(tmp_path / "weights.pt"),
         STEPS, "fail_at=5"],
        capture_output=True, text=True, timeout=240, env={**idle_cluster.env(), "NO_COLOR": "1"}, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "restart 1 of 1" in result.stderr
    assert "auto_resume: resumed from" in result.stdout + result.stderr
    assert_same_weights(tmp_path / "weights.pt", uninterrupted)


def _squeue_state(slurm, job: str) -> str:
    """The job's state, or "" when squeue does not say (gone, or slurmctld busy)."""
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, env=slurm.env(),
                          timeout=30).stdout.strip()


def test_a_preempted_slurm_job_saves_on_sigterm_requeues_and_resumes_exactly(slurm, tmp_path, uninterrupted):
    """The batch shell gets SIGTERM (what `sbatch --signal=B:TERM@T` sends before the time limit, here from
    `scancel --batch`), hands it to dsrun, every rank saves and stops with 75, the script requeues itself on 75 (the
    usual Slurm pattern), and the job's second run resumes from the checkpoint."""
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"{sys.executable} -m dsrun --launcher slurm --shutdown-timeout 20 --no_local_rank {WORKER}"
        # 1.5 s per step: the signal travels scancel -> slurmctld -> slurmd, seconds on a loaded machine, and must
        # arrive before the run's last step.
        f" {tmp_path / 'ckpt'} {tmp_path / 'weights.pt'} {STEPS} slow=1.5 &\n"
        "dsrun=$!\n"
        "trap 'kill -TERM $dsrun' TERM\n"
        "wait $dsrun; wait $dsrun; code=$?\n"  # the first wait returns when the trap runs
        "echo \"dsrun exited with $code\"\n"
        "if [ $code -eq 75 ]; then scontrol requeue $SLURM_JOB_ID; fi\n"
        "exit $code\n")
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-N1", "-n2", "--requeue", "--open-mode=append", f"--output={tmp_path / 'out.txt'}",
         f"--chdir={tmp_path}", str(script)],
        capture_output=True, text=True, env={**slurm.env(), "NO_COLOR": "1"}, timeout=30, check=True)
    job = submitted.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ckpt" / "latest").exists():  # the first interval save: training is under way
            assert time.monotonic() < deadline, (tmp_path / "out.txt").read_text()
            time.sleep(0.2)
        subprocess.run(["scancel", "--batch", "--signal=TERM", job], check=True, env=slurm.env(), timeout=30)
        released_at = 0.0
        # Stopping, requeued, pending, running again, done: the second run's last line says when. (Not "until squeue
        # no longer lists it": a loaded slurmctld can answer nothing for a moment.)
        while "dsrun exited with 0" not in (tmp_path / "out.txt").read_text():
            assert time.monotonic() < deadline + 150, ((tmp_path / "out.txt").read_text(), subprocess.run(
                ["scontrol", "show", "job", job], capture_output=True, text=True, env=slurm.env(), timeout=30).stdout)
            # A requeued job waits (its begin time) before it may start: let it start now. Again every few seconds
            # while it is pending, since slurmctld may still set that begin time after a first update.
            if time.monotonic() - released_at > 3 and _squeue_state(slurm, job) == "PENDING":
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm.env(), timeout=30)
                released_at = time.monotonic()
            time.sleep(0.5)
    finally:
        subprocess.run(["scancel", job], env=slurm.env(), timeout=30)
    out = (tmp_path / "out.txt").read_text()
    assert "SIGTERM: stopped after step" in out and "dsrun exited with 75" in out, out
    assert "auto_resume: resumed from" in out and "dsrun exited with 0" in out, out
    assert_same_weights(tmp_path / "weights.pt", uninterrupted)
