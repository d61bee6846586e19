"""Benchmark "train-step": seconds per optimizer step of dsrun's engine against hand-written torch (and DeepSpeed).

A 5.3M-parameter GPT (bench/models.py), 2 ranks on gloo, micro-batch 4 × 128 tokens, gradient accumulation 2,
AdamW with clipping 1.0, ZeRO stages 0-3 in fp32 and bf16. One worker pair runs every configuration; inside a
configuration the implementations are built on the same weights and data, warmed up, and timed in interleaved
repetitions (bench/train_worker.py). Since they take the same steps on the same data, their losses must agree too.
"""

from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

from bench import workers
from bench.stats import paired_ratios, summary

NAME = "train-step"
BF16_SUM_NAME = "train-step-bf16-sum"
GOAL_VS_HAND = 1.03  # dsrun / hand-written, median of the per-repetition ratios
GOAL_VS_DEEPSPEED = 1.0  # dsrun / DeepSpeed: below this


def run(reps: int, repo: Path, quick: bool = False, communication_data_type: str | None = None) -> dict:
    """With communication_data_type, only bf16 training is measured, dsrun and DeepSpeed both summing gradients in
    that dtype (by default dsrun sums in fp32 and DeepSpeed in bf16)."""
    with_deepspeed = workers.deepspeed_available()
    if not with_deepspeed:
        print(f"  train-step: DeepSpeed is not installed for {sys.executable}: dsrun vs hand-written only; "
              f"{workers.PEERS_HINT}", file=sys.stderr)
    impls = ["dsrun", "hand", *(["deepspeed"] if with_deepspeed else [])]
    steps_per_rep, warmup = (1, 1) if quick else (2, 2)
    worker_args = ["--mode", "time", "--reps", str(reps), "--steps-per-rep", str(steps_per_rep),
                   "--warmup", str(warmup), "--impls", *impls]
    if communication_data_type:
        worker_args += ["--communication-data-type", communication_data_type, "--precisions", "bf16"]
    result = workers.run_worker(worker_args, with_deepspeed, repo)
    ranks = result["ranks"]
    configs = ranks[0]["configs"]
    for i, config in enumerate(configs):
        # Each rank trains on its own micro-batches, so both ranks' losses go into the agreement check.
        config["losses_by_rank"] = [r["configs"][i].pop("losses") for r in ranks]
        config["cpu_times_by_rank"] = [r["configs"][i]["cpu_times"] for r in ranks]
    return {
        "impls": impls,
        "with_deepspeed": with_deepspeed,
        "communication_data_type": communication_data_type,
        "deepspeed_errors": sorted({e for c in configs for e in c["errors"].values()}),
        "steps_per_rep": steps_per_rep,
        "warmup_steps": warmup,
        "facts": result["facts"],
        "command": result["command"],
        "failed_attempts": result["failed_attempts"],
        "configs": configs,
        "summary": summarize(configs, impls),
    }


def _loss_agreement(losses_by_rank: list[dict[str, list[float]]], a: str, b: str) -> float | None:
    diffs = [abs(x - y) for rank in losses_by_rank if a in rank and b in rank
             for x, y in zip(rank[a], rank[b], strict=True)]
    return max(diffs) if diffs else None


def summarize(configs: list[dict], impls: list[str]) -> dict:
    rows = []
    for config in configs:
        times = config["times"]
        row = {"stage": config["stage"], "precision": config["precision"],
               "seconds": {name: summary(values) for name, values in times.items()}, "ratios": {}, "losses": {}}
        # CPU seconds of both ranks together, per repetition: the same work, whatever else ran on the machine.
        cpu = {name: [sum(rep) for rep in zip(*(r[name] for r in config["cpu_times_by_rank"]), strict=True)]
               for name in times}
        row["cpu_seconds"] = {name: summary(values) for name, values in cpu.items()}
        for other in ("hand", "deepspeed"):
            if other in times and "dsrun" in times:
                row["ratios"][f"dsrun/{other}"] = summary(paired_ratios(times["dsrun"], times[other]))
                row["ratios"][f"dsrun/{other} cpu"] = summary(paired_ratios(cpu["dsrun"], cpu[other]))
        for a, b in combinations([i for i in impls if i in times], 2):
            row["losses"][f"{a}-{b}"] = _loss_agreement(config["losses_by_rank"], a, b)
        rank0 = config["losses_by_rank"][0].get("dsrun") or []
        row["loss_first_last"] = [rank0[0], rank0[-1]] if rank0 else None
        vs_hand = row["ratios"].get("dsrun/hand")
        vs_ds = row["ratios"].get("dsrun/deepspeed")
        row["goals"] = {
            "vs_hand": None if vs_hand is None else vs_hand["median"] <= GOAL_VS_HAND,
            "vs_deepspeed": None if vs_ds is None else vs_ds["median"] < GOAL_VS_DEEPSPEED,
        }
        rows.append(row)
    return {"rows": rows, "goal": {"dsrun/hand_at_most": GOAL_VS_HAND, "dsrun/deepspeed_below": GOAL_VS_DEEPSPEED}}
