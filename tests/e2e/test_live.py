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


def final_screen(raw: bytes) -> list[str]:
    """The terminal's lines (scrollback included) once `raw` is written to it, following the only cursor moves the
    live view makes: carriage return, newline, erase the line, one line up."""
    lines, row = [""], 0
    for token in re.split(rb"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", raw):
        if token == b"\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif token in (b"\x1b[2K", b"\r"):
            lines[row] = "" if token == b"\x1b[2K" else lines[row]
        elif token == b"\x1b[1A":
            row = max(row - 1, 0)
        elif not token.startswith(b"\x1b"):
            lines[row] += token.decode("utf-8", "replace")  # a line is only ever written from its start here
    return lines


def steps_on(text: str) -> dict[int, int]:
    """The last step shown for each running rank in `text`."""
    return {int(m[1]): int(m[6]) for m in ROW.finditer(text) if m[3] == "running" and m[6] != "-"}


def run_on_a_terminal(args, env, cwd=None, timeout=60.0, salloc=()):
    """Run `dsrun ARGS` (inside `salloc ...` if given) with stdout and stderr on a pseudo-terminal of 120 columns;
    returns (exit code, screens), where screens are the bytes read so far at each read."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([*salloc, sys.executable, "-m", "dsrun", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env, cwd=cwd, close_fds=True)
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
    code, screens = run_on_a_terminal(["--num_gpus", "2", "--no_local_rank", "--live", str(WORKER), "8", "0.25"],
                                      {**os.environ, "PID_DIR": str(pid_dir)})
    text = screen_text(screens[-1])
    assert code == 0, text[-3000:]
    assert "dsrun · 2 rank(s)" in text
    # Two reads of the screen: the first that shows both ranks running at some step, and the last.
    first = next(steps_on(screen_text(raw)) for raw in screens if len(steps_on(screen_text(raw))) == 2)
    last = steps_on(text)
    assert set(last) == {0, 1} and all(last[rank] > first[rank] for rank in (0, 1)), (first, last)
    # What stays on the screen: every worker line once, above the one table, which shows how each rank ended.
    screen = final_screen(screens[-1])
    title = next(i for i, line in enumerate(screen) if line.startswith("dsrun · 2 rank(s)"))
    assert sum(line.startswith("dsrun · 2 rank(s)") for line in screen) == 1, "\n".join(screen)
    for rank in (0, 1):
        shown = [line for line in screen[:title] if line.startswith(f"[rank {rank}] ")]
        assert shown == [f"[rank {rank}] rank {rank} step {step}" for step in range(1, 9)], "\n".join(screen)
        assert any(re.match(rf"\s*{rank}\s+\S+\s+\d+\s+exited 0\s", line) for line in screen[title:])
    assert screen[-2:] == ["dsrun: all 2 worker(s) finished", ""], "\n".join(screen)

