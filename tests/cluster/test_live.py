"""--live over SSH on 2 real hosts (network namespaces), 2 ranks each, read from the screen of a pseudo-terminal:
the launcher's one table shows every rank on its host, its step advancing, and the remote lines scroll above it."""

import re
import sys
from pathlib import Path

from tests.e2e.test_live import final_screen, run_on_a_terminal, screen_text

REPO = Path(__file__).resolve().parents[2]
WORKER = str(REPO / "tests" / "e2e" / "live_heartbeat_worker.py")
ROW = re.compile(r"^\s*(\d)\s+(h\d)\s+\d+\s+running\s+\S+\s+\S+ \S+\s+(\d+)\s", re.MULTILINE)


def test_the_live_view_shows_every_host_s_ranks(idle_cluster, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    (tmp_path / ".dsrun_env").write_text(f"export PID_DIR={pids}\n")
    # The hosts run this checkout's dsrun (agent and workers), whichever one is installed: the agent protocol and
    # the progress slot's format must be the launcher's.
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    code, screens = run_on_a_terminal(["-H", str(idle_cluster.hostfile(2)), "--remote-python", str(python),
                                       "--live", "--no_local_rank", WORKER, "12", "0.25"],
                                      idle_cluster.env(), cwd=tmp_path)
    text = screen_text(screens[-1])
    assert code == 0, text[-3000:]
    steps: dict[int, list[int]] = {}
    for match in ROW.finditer(text):
        assert match[2] == f"h{int(match[1]) // 2 + 1}"  # ranks 0-1 on h1, 2-3 on h2
        steps.setdefault(int(match[1]), []).append(int(match[3]))
    assert set(steps) == {0, 1, 2, 3}, text[-3000:]
    assert all(seen[-1] > seen[0] for seen in steps.values()), steps  # the step advanced while it ran
    screen = final_screen(screens[-1])
    title = next(i for i, line in enumerate(screen) if line.startswith("dsrun · 4 rank(s)"))
    for rank in range(4):
        host = f"h{rank // 2 + 1}"
        shown = [line for line in screen[:title] if line.startswith(f"[{host} rank {rank}] ")]
        assert shown == [f"[{host} rank {rank}] rank {rank} step {step}" for step in range(1, 13)], "\n".join(screen)
        assert any(re.match(rf"\s*{rank}\s+{host}\s+\d+\s+exited 0\s", line) for line in screen[title:])


def test_the_live_view_under_slurm(slurm, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    # Slurm passes the environment on to srun's tasks: the node agent and the workers run this checkout's dsrun.
    env = {**slurm.env(), "PYTHONPATH": str(REPO), "PID_DIR": str(pids)}
    code, screens = run_on_a_terminal(["--launcher", "slurm", "--live", "--no_local_rank", WORKER, "8", "0.25"], env,
                                      cwd=tmp_path, salloc=["salloc", "-N1", "-n2"])
    screen = final_screen(screens[-1])
    assert code == 0, "\n".join(screen)
    title = next(i for i, line in enumerate(screen) if line.startswith("dsrun · 2 rank(s)"))
    for rank in (0, 1):
        shown = [line for line in screen[:title] if line.startswith(f"[{slurm.node} rank {rank}] ")]
        assert shown == [f"[{slurm.node} rank {rank}] rank {rank} step {step}" for step in range(1, 9)]
        assert any(re.match(rf"\s*{rank}\s+\S+\s+\d+\s+exited 0\s+-\s+-\s+8\s", line) for line in screen[title:])
