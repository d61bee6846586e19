"""Jobs that survive a failure or a preemption: the engine's own saves (checkpoint.save_dir / save_interval /
auto_resume), `--max_restarts`, and SIGTERM = "save and stop" (exit code 75). Each ends with weights bit-identical
to a run that never stopped (fp32, dropout on: the random streams and the data position come back too)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.e2e.worker_output import marked

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).parent / "resume_worker.py"
STEPS = 9


def command(save_dir: Path, out: Path, *options: str, launcher: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", *launcher, str(WORKER),
            str(save_dir), str(out), str(STEPS), *options]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, **kwargs), capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    where = tmp_path_factory.mktemp("straight")
    result = run(where / "ckpt", where / "weights.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert marked(result.stdout, "RESUME") == {"steps": STEPS}
    return torch.load(where / "weights.pt")


def same_weights(path: Path, reference: dict) -> bool:
    weights = torch.load(path)
    return weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in reference)


def test_a_second_launch_resumes_a_failed_run_exactly(tmp_path, uninterrupted):
    failed = run(tmp_path / "ckpt", tmp_path / "weights.pt", "fail_at=5")
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert (tmp_path / "ckpt" / "latest").read_text() == "global_step4"  # save_interval 2
    again = run(tmp_path / "ckpt", tmp_path / "weights.pt")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "auto_resume: resumed from" in again.stderr and "at step 4" in again.stderr
    assert same_weights(tmp_path / "weights.pt", uninterrupted)


def test_max_restarts_restarts_the_world_and_it_resumes_exactly(tmp_path, uninterrupted):
    result = run(tmp_path / "ckpt", tmp_path / "weights.pt", "fail_at=5",
                 launcher=("--max_restarts", "2", "--restart-backoff", "0.1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "restart 1 of 2" in result.stderr and "restart 2" not in result.stderr
    assert "at step 4 (restart 1)" in result.stderr
    assert same_weights(tmp_path / "weights.pt", uninterrupted)


def test_restarts_give_up_after_max_restarts(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nsys.exit(3)\n")  # fails every attempt the same way
    result = subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", "--max_restarts",
                             "1", "--restart-backoff", "0", str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "restart 1 of 1" in result.stderr and "giving up after 1 restart(s)" in result.stderr


def test_sigterm_saves_stops_with_75_and_the_next_start_resumes_exactly(tmp_path, uninterrupted):
    # With csv_monitor on, whose own SIGTERM handler would close the run and let the signal kill the process.
    job = subprocess.Popen(command(tmp_path / "ckpt", tmp_path / "weights.pt", "slow", f"csv={tmp_path}"),
                           stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "ckpt" / "latest").exists():  # the first interval save: training is under way
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 75, stderr[-3000:]
    assert "SIGTERM: stopped after step" in stderr
    stopped_at = int((tmp_path / "ckpt" / "latest").read_text().removeprefix("global_step"))
    assert 2 <= stopped_at < STEPS
    rows = (tmp_path / "resume" / "training_metrics.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, stopped_at + 1))  # every step, closed at exit
    again = run(tmp_path / "ckpt", tmp_path / "weights.pt")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at step {stopped_at}" in again.stderr
    assert same_weights(tmp_path / "weights.pt", uninterrupted)
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "ckpt").iterdir())
