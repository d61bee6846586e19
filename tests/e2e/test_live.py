"""--live on a real 2-rank CPU job, read from the screen of a pseudo-terminal: every rank has a row, the step column
advances between two reads, and the workers' lines scroll above the table. (Off without a terminal: unit-tested in
tests/unit/test_live.py.)"""

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).with_name("live_worker.py")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# rank, host, pid, state, CPU%, RSS, step: the columns read here (view.render_table).
ROW = re.compile(r"^\s*(\d)\s+\S+\s+(\d+)\s+(starting|at rendezvous|running|exited \d+)\s+(\S+)\s+(\S+ \S+|-)"
                 r"\s+(\d+|-)\s", re.MULTILINE)


def screen_text(raw: bytes) -> str:
    return ANSI.sub(b"", raw).replace(b"\r", b"").decode("utf-8", "replace")


def steps_on(text: str) -> dict[int, int]:
    """The last step shown for each running rank in `text`."""
    return {int(m[1]): int(m[6]) for m in ROW.finditer(text) if m[3] == "running" and m[6] != "-"}


def run_on_a_terminal(pid_dir, *args, timeout=60.0):
    """Run dsrun with stdout and stderr on a pseudo-terminal of 120 columns; returns (exit code, screens), where
    screens are the bytes read so far at each read."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PID_DIR": str(pid_dir), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", *args],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    raw, screens = b"", []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
                screens.append(raw)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, screens


def test_the_live_view_shows_every_rank_and_updates_in_place(pid_dir):
    code, screens = run_on_a_terminal(pid_dir, "--live", str(WORKER), "8", "0.25")
    text = screen_text(screens[-1])
    assert code == 0, text[-3000:]
    assert "dsrun · 2 rank(s)" in text
    # Two reads of the screen: the first that shows both ranks running at some step, and the last.
    first = next(steps_on(screen_text(raw)) for raw in screens if len(steps_on(screen_text(raw))) == 2)
    last = steps_on(text)
    assert set(last) == {0, 1} and all(last[rank] > first[rank] for rank in (0, 1)), (first, last)
    for rank in (0, 1):
        assert re.search(rf"^\s*{rank}\s+\S+\s+\d+\s+exited 0\s", text, re.MULTILINE), text[-3000:]  # the end
        assert f"[rank {rank}] rank {rank} step 8" in text  # the workers' output, above the table
    assert "dsrun: all 2 worker(s) finished" in text

