"""Benchmark "checkpoint": engine.save_checkpoint / load_checkpoint of a ~50M-parameter model with AdamW state on 2
ranks, against torch.save / torch.load of the same model and optimizer state in the same processes.

Goal: ≤ 1.2× torch's time for both. dsrun writes every rank's shards in parallel and stages the save in a
temporary directory it renames into place (crash safety); torch.save writes one file from one rank.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.stats import paired_ratios, summary

NAME = "checkpoint"
GOAL_RATIO = 1.2
STAGES = (0, 3)


def _run_stage(repo: Path, stage: int, reps: int) -> dict:
    command = [str(repo / ".venv" / "bin" / "dsrun"), "--num_gpus", "2", "--no_local_rank", "--quiet",
               str(repo / "bench" / "checkpoint_worker.py"), str(stage), str(reps)]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"checkpoint benchmark (stage {stage}) failed:\n{result.stderr[-2000:]}")
    line = next(line for line in result.stdout.splitlines() if "RESULT " in line)
    return json.loads(line.split("RESULT ", 1)[1])


def run(reps: int, repo: Path, quick: bool = False) -> dict:
    stages = {}
    for stage in STAGES:
        data = _run_stage(repo, stage, max(reps, 2))
        raw = data["raw"]
        save = summary(paired_ratios([r["dsrun_save"] for r in raw], [r["torch_save"] for r in raw]))
        load = summary(paired_ratios([r["dsrun_load"] for r in raw], [r["torch_load"] for r in raw]))
        data["summary"] = {
            "dsrun_save_s": summary([r["dsrun_save"] for r in raw]),
            "torch_save_s": summary([r["torch_save"] for r in raw]),
            "dsrun_load_s": summary([r["dsrun_load"] for r in raw]),
            "torch_load_s": summary([r["torch_load"] for r in raw]),
            "save_ratio": save,
            "load_ratio": load,
            "goal": {"ratio_at_most": GOAL_RATIO,
                     "met": save["median"] <= GOAL_RATIO and load["median"] <= GOAL_RATIO},
        }
        stages[str(stage)] = data
        print(f"  checkpoint stage {stage}: save ×{save['median']:.2f}, load ×{load['median']:.2f}",
              file=sys.stderr)
    return {"stages": stages}




def table(result: dict) -> list[str]:
    """Markdown rows for bench/README.md."""
    def spread(s: dict, digits: int = 2) -> str:
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"

    lines = ["| stage | params | dsrun save s | torch.save s | save ratio | dsrun load s | torch.load s | load ratio"
             " | goal ≤ 1.2 |", "|---|---|---|---|---|---|---|---|---|"]
    for stage, data in result["stages"].items():
        s = data["summary"]
        lines.append(f"| z{stage} | {data['params'] / 1e6:.1f}M | {spread(s['dsrun_save_s'])}"
                     f" | {spread(s['torch_save_s'])} | {spread(s['save_ratio'])} | {spread(s['dsrun_load_s'])}"
                     f" | {spread(s['torch_load_s'])}"
                     f" | {spread(s['load_ratio'])} | {'**met**' if s['goal']['met'] else '**missed**'} |")
    lines += ["", "2 ranks on gloo. dsrun: every rank writes its shards through torch.distributed.checkpoint into a"
              " staging directory renamed into place; torch: rank 0 saves the whole model and optimizer state,"
              " every rank loads it (as a DDP script must)."]
    return lines
