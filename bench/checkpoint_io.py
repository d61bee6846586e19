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


if __name__ == "__main__":
    REPO = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(REPO))
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3, REPO), indent=2))
