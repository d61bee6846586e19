"""Benchmark "plan-scale": how planning a launch grows with the cluster, from 8 to 1024 hosts of 8 slots.

Two figures per size: the wall time of `dsrun --dry-run --json --model-params 7e10` (what a user waits for,
including Python start-up and imports, with the memory estimate of a 70B-parameter model), and the in-process time of
plan_launch + the estimate + plan_json alone (the part that grows with the world), so start-up cost cannot hide a
superlinear plan.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import summary
from bench.timing import BenchError, time_command
from dsrun.launcher.memory.estimate import MemoryRequest, build
from dsrun.launcher.plan import render
from dsrun.launcher.plan.resolve import LaunchOptions, plan_launch

NAME = "plan-scale"
HOST_COUNTS = (8, 128, 1024)
SLOTS_PER_HOST = 8
GOAL_SECONDS_AT_1024 = 1.0  # wall time of the whole dry-run command
MODEL_PARAMS = 70_000_000_000  # the memory estimate's model: 70B parameters


def write_hostfile(directory: Path, hosts: int) -> Path:
    path = directory / f"hostfile-{hosts}"
    path.write_text("".join(f"node-{i:05d} slots={SLOTS_PER_HOST}\n" for i in range(1, hosts + 1)))
    return path


def cli_command(repo: Path, hostfile: Path) -> list[str]:
    # --device cpu: with a hostfile the slots come from the file, and cpu works on machines without GPUs.
    dsrun = str(repo / ".venv" / "bin" / "dsrun")
    return [dsrun, "--dry-run", "--json", "--model-params", str(MODEL_PARAMS), "-H", str(hostfile), "--device", "cpu",
            "examples/noop.py"]


def time_cli(repo: Path, hostfile: Path, ranks: int) -> float:
    seconds, stdout = time_command(cli_command(repo, hostfile), repo)
    # Checked after the clock stopped: a fast run that planned the wrong world would be a meaningless figure.
    planned = json.loads(stdout)
    world_size = planned["world_size"]
    if world_size != ranks or planned["memory"]["parameters"] != MODEL_PARAMS:
        raise BenchError(f"dry run of {hostfile.name} planned {world_size} ranks, expected {ranks}, with a memory"
                         f" estimate of {MODEL_PARAMS} parameters")
    return seconds


def time_in_process(repo: Path, hostfile: Path) -> tuple[float, float]:
    """Seconds for plan_launch and for the memory estimate + plan_json, measured apart: building the plan and
    showing it are different costs, and either one can be the part that grows too fast."""
    options = LaunchOptions(script=str(repo / "examples" / "noop.py"), hostfile=str(hostfile), device="cpu")
    start = time.perf_counter()
    plan = plan_launch(options)
    planned = time.perf_counter()
    render.plan_json(plan, memory=build(plan, MemoryRequest(model_params=MODEL_PARAMS)))
    rendered = time.perf_counter()
    return planned - start, rendered - planned


def run(reps: int, repo: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="dsrun-bench-") as tmp:
        hostfiles = {hosts: write_hostfile(Path(tmp), hosts) for hosts in HOST_COUNTS}
        # One untimed pass: the first call pays for lazy imports inside the launcher and for cold caches.
        for hosts, hostfile in hostfiles.items():
            time_cli(repo, hostfile, hosts * SLOTS_PER_HOST)
            time_in_process(repo, hostfile)
        raw = []
        for rep in range(reps):
            # Every size in every repetition, so a busy moment on the machine hits all sizes, not just one.
            for hosts, hostfile in hostfiles.items():
                ranks = hosts * SLOTS_PER_HOST
                cli_s = time_cli(repo, hostfile, ranks)
                plan_s, render_s = time_in_process(repo, hostfile)
                raw.append({"rep": rep, "hosts": hosts, "ranks": ranks, "cli_s": cli_s, "plan_s": plan_s,
                            "render_s": render_s})
            print(f"  plan-scale rep {rep + 1}/{reps}: " + ", ".join(
                f"{r['hosts']} hosts {r['cli_s']:.3f} s" for r in raw if r["rep"] == rep), file=sys.stderr)
    return {
        "slots_per_host": SLOTS_PER_HOST,
        "command": cli_command(repo, Path("HOSTFILE")),
        "cwd": str(repo),
        "raw": raw,
        "summary": summarize(raw),
    }


def summarize(raw: list[dict]) -> dict:
    sizes = []
    for hosts in sorted({r["hosts"] for r in raw}):
        rows = [r for r in raw if r["hosts"] == hosts]
        ranks = rows[0]["ranks"]
        in_process = summary([r["plan_s"] + r["render_s"] for r in rows])
        cli = summary([r["cli_s"] for r in rows])
        sizes.append({
            "hosts": hosts,
            "ranks": ranks,
            "cli_s": cli,
            "plan_s": summary([r["plan_s"] for r in rows]),
            "render_s": summary([r["render_s"] for r in rows]),
            "in_process_s": in_process,
            # Per-rank cost from the in-process time: the CLI's fixed start-up would make small worlds look costly.
            "in_process_us_per_rank": in_process["median"] / ranks * 1e6,
        })
    smallest, largest = sizes[0], sizes[-1]
    # 1.0 means linear growth; well above 1 means each rank costs more as the world grows (superlinear).
    growth = largest["in_process_us_per_rank"] / smallest["in_process_us_per_rank"]
    return {
        "sizes": sizes,
        "per_rank_growth": {"from_hosts": smallest["hosts"], "to_hosts": largest["hosts"], "ratio": growth},
        "goal": {"hosts": largest["hosts"], "cli_seconds_below": GOAL_SECONDS_AT_1024,
                 "met": largest["cli_s"]["median"] < GOAL_SECONDS_AT_1024},
    }
