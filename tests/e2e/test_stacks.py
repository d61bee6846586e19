"""`kill -USR1 <dsrun pid>`: every rank's stack, and the job goes on (it is stopped afterwards with SIGTERM)."""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("stack_worker.py"))


def read_until(proc: subprocess.Popen, done, seconds: float = 60.0) -> str:
    """The launcher's merged output until `done(text)` holds."""
    text, deadline = "", time.monotonic() + seconds
    while not done(text):
        assert time.monotonic() < deadline, f"timed out; output so far:\n{text[-3000:]}"
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            assert chunk, f"the launcher ended early:\n{text[-3000:]}"
            text += chunk
    return text


@pytest.mark.parametrize("mode", ["runtime", "plain"])
def test_sigusr1_prints_every_ranks_stack_and_the_job_goes_on(mode):
    proc = subprocess.Popen([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", WORKER, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        read_until(proc, lambda t: t.count("READY") == 2)
        proc.send_signal(signal.SIGUSR1)
        if mode == "runtime":  # faulthandler's dump, line by line with each rank's prefix
            text = read_until(proc, lambda t: all(f"[rank {r}]" in t and "in waiting_for_the_test" in t
                                                  for r in (0, 1)) and t.count("in waiting_for_the_test") >= 2)
            for rank in (0, 1):
                assert any(line.startswith(f"[rank {rank}]") and "in waiting_for_the_test" in line
                           for line in text.splitlines())
        else:  # no handler: never signalled (it would die), and the launcher says why there is no stack
            text = read_until(proc, lambda t: t.count("no stack: its process does not take SIGUSR1") == 2
                              or "(py-spy)" in t)
        assert proc.poll() is None, "the job must go on after a stack dump"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
