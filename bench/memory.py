"""Benchmark "memory": per-rank model-state bytes of each ZeRO stage against the ZeRO formula, and peak RSS.

Every (implementation, stage, precision) runs in a fresh worker pair, so a process's peak RSS is its own and not
left over from an earlier configuration. Model state (parameters + gradients + optimizer state and fp32 masters) is
counted from the tensors during the last update by dsrun.runtime.memory.model_state_bytes, for dsrun's engine and
the hand-written loops alike. DeepSpeed keeps its state in flat buffers inside its optimizer wrappers, which that
count cannot see, so DeepSpeed is compared on RSS only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import workers
from bench.timing import BenchError
from bench.train_setup import PRECISIONS, STAGES

NAME = "memory"
GOAL_FORMULA_TOLERANCE = 0.05  # dsrun's model state within 5% of the formula
WARMUP_STEPS = 2  # then one more step, the counted one


def formula_bytes_per_param(stage: int, precision: str, world: int) -> float:
    """ZeRO paper, per parameter per rank. fp32: 4 B weights + 4 B grads + 8 B Adam moments; mixed precision:
    2 B weights + 2 B grads + 12 B optimizer state (4 B fp32 master + 8 B moments)."""
    if precision == "fp32":
        weights, grads, optimizer = 4, 4, 8
    else:
        weights, grads, optimizer = 2, 2, 12
    n = world
    return {
        0: weights + grads + optimizer,
        1: weights + grads + optimizer / n,
        2: weights + (grads + optimizer) / n,
        3: (weights + grads + optimizer) / n,
    }[stage]


def run(reps: int, repo: Path, quick: bool = False) -> dict:
    with_deepspeed = workers.deepspeed_available()
    if not with_deepspeed:
        print(f"  memory: DeepSpeed is not installed for {sys.executable}: no RSS comparison with it; "
              f"{workers.PEERS_HINT}", file=sys.stderr)
    impls = ["dsrun", "hand", *(["deepspeed"] if with_deepspeed else [])]
    precisions = ("fp32",) if quick else PRECISIONS
    raw, errors = [], []
    # Memory does not drift with the machine's load as time does: one run per configuration is the figure.
    for stage in STAGES:
        for precision in precisions:
            for impl in impls:
                print(f"  memory: {impl} z{stage} {precision}", file=sys.stderr, flush=True)
                args = ["--mode", "memory", "--stages", str(stage), "--precisions", precision, "--impls", impl,
                        "--warmup", str(WARMUP_STEPS)]
                try:
                    result = workers.run_worker(args, impl == "deepspeed", repo)
                except BenchError as err:
                    if impl != "deepspeed":
                        raise
                    errors.append(f"z{stage} {precision}: {err}")  # a failing peer is reported, not fatal
                    continue
                raw.append({"stage": stage, "precision": precision, "impl": impl,
                            "parameters": result["facts"]["parameters"], "world": result["facts"]["world"],
                            "ranks": result["ranks"], "failed_attempts": result["failed_attempts"]})
    return {"impls": impls, "with_deepspeed": with_deepspeed, "deepspeed_errors": errors, "raw": raw,
            "summary": summarize(raw)}


def summarize(raw: list[dict]) -> dict:
    rows = []
    for entry in raw:
        ranks = entry["ranks"]
        formula = formula_bytes_per_param(entry["stage"], entry["precision"], entry["world"]) * entry["parameters"]
        row = {
            "stage": entry["stage"], "precision": entry["precision"], "impl": entry["impl"],
            "formula_bytes": formula,
            "rss_peak_bytes": max(r["rss_peak"] for r in ranks),
            "rss_base_bytes": max(r["rss_base"] for r in ranks),
            "rss_growth_bytes": max(r["rss_peak"] - r["rss_base"] for r in ranks),
        }
        states = [r["model_state"] for r in ranks if r["model_state"]]
        if states:
            worst = max(states, key=lambda s: s["total"])  # the rank holding the most (uneven shards)
            row["model_state"] = worst
            row["vs_formula"] = worst["total"] / formula
            row["within_tolerance"] = abs(row["vs_formula"] - 1) <= GOAL_FORMULA_TOLERANCE
        rows.append(row)
    by_key = {(r["stage"], r["precision"], r["impl"]): r for r in rows}
    for row in rows:
        peer = by_key.get((row["stage"], row["precision"], "deepspeed"))
        if row["impl"] == "dsrun" and peer is not None:
            row["rss_vs_deepspeed"] = row["rss_peak_bytes"] / peer["rss_peak_bytes"]
    return {"rows": rows, "goal": {"formula_tolerance": GOAL_FORMULA_TOLERANCE, "rss_at_most_deepspeed": True}}
