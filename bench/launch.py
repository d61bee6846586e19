"""Benchmark "launch": how long dsrun takes to start, run and tear down 2 do-nothing workers, against torchrun.

The workers (examples/noop.py) do nothing, so the figure is the launcher's own cost: its imports, planning,
spawning and supervision. Both launchers start the same 2 Python workers, so the difference is launcher overhead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.stats import paired_ratios, summary
from bench.timing import time_command

NAME = "launch"
GOAL_RATIO = 0.2  # dsrun / torchrun, median of the per-pair ratios


def commands(repo: Path) -> dict[str, list[str]]:
    venv_bin = repo / ".venv" / "bin"
    return {
        "dsrun": [str(venv_bin / "dsrun"), "--num_gpus", "2", "examples/noop.py"],
        "torchrun": [str(venv_bin / "torchrun"), "--nproc_per_node", "2", "examples/noop.py"],
    }


def run(reps: int, repo: Path) -> dict:
    cmds = commands(repo)
    # One untimed run each first: the first start after an install pays for writing .pyc files and a cold page
    # cache, which is neither launcher's steady state. Kept in the JSON so the cost stays visible.
    warmup = {name: time_command(cmd, repo)[0] for name, cmd in cmds.items()}
    raw = []
    for rep in range(reps):
        # A/B interleaved, and the order flips every repetition so neither launcher always runs second
        # (right after the other one warmed the caches or heated the CPU).
        order = ["dsrun", "torchrun"] if rep % 2 == 0 else ["torchrun", "dsrun"]
        times = {name: time_command(cmds[name], repo)[0] for name in order}
        raw.append({"rep": rep, "order": order, **times})
        print(f"  launch rep {rep + 1}/{reps}: dsrun {times['dsrun']:.3f} s, torchrun {times['torchrun']:.3f} s",
              file=sys.stderr)
    return {"commands": cmds, "cwd": str(repo), "warmup": warmup, "raw": raw, "summary": summarize(raw)}


def summarize(raw: list[dict]) -> dict:
    dsrun = [r["dsrun"] for r in raw]
    torchrun = [r["torchrun"] for r in raw]
    ratio = summary(paired_ratios(dsrun, torchrun))
    return {
        "dsrun_s": summary(dsrun),
        "torchrun_s": summary(torchrun),
        "ratio": ratio,
        "goal": {"ratio_at_most": GOAL_RATIO, "met": ratio["median"] <= GOAL_RATIO},
    }
