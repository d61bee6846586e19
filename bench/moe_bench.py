"""Benchmark "moe": forward+backward seconds of dsrun's MoE layer against DeepSpeed's, and against itself without
expert parallelism (what the all_to_all exchange costs).

One MoE block: hidden 256, 4 experts, each a 2-layer MLP 256 -> 1024 -> 256 (GELU), 2 ranks on gloo, a fixed batch
of 4 × 128 tokens per rank, top-1 and top-2 gating (capacity factor 1.0, drops and random token selection on:
DeepSpeed's defaults), the loss a fixed projection of the output plus 0.01 × l_aux. Implementations:

    dsrun      dsrun.moe.layer.MoE at ep_size 2: 2 experts per rank, tokens exchanged by all_to_all
    dsrun-ep1  the same layer at ep_size 1: all 4 experts on every rank, no exchange (same expert FLOPs per rank)
    deepspeed  deepspeed.moe.layer.MoE at ep_size 2 (when DeepSpeed is importable)

All start from the same gate and expert weights (loaded by global expert index), so on the same tokens and the same
random draws they must route alike and give the same outputs, l_aux and gradients; the worker checks that once before
timing. Also per rank: the expert parameter bytes each holds against all experts' bytes (expected 1 / ep_size).
"""

from __future__ import annotations

import math
import os
import sys
from itertools import combinations
from pathlib import Path

from bench import workers
from bench.report_training import _loss, _spread, _verdict
from bench.stats import paired_ratios, summary

NAME = "moe"
WORKER = Path(__file__).resolve().parent / "moe_worker.py"
HIDDEN = 256
FFN = 1024
EXPERTS = 4
EP_SIZE = 2
BATCH, SEQUENCE = 4, 128  # tokens per rank: 512
TOP_K = (1, 2)  # one table row each
CAPACITY_FACTOR = 1.0
MIN_CAPACITY = 4
AUX_COEF = 0.01
SEED = 0
GOAL_VS_DEEPSPEED = 1.0  # dsrun / DeepSpeed: below this
MIB = 1024 * 1024


def layer_options(k: int) -> dict:
    """The keyword arguments both MoE classes get (besides hidden_size, expert, num_experts, ep_size)."""
    return {"k": k, "capacity_factor": CAPACITY_FACTOR, "eval_capacity_factor": CAPACITY_FACTOR,
            "min_capacity": MIN_CAPACITY, "noisy_gate_policy": None, "drop_tokens": True, "use_rts": True}


def capacity(k: int) -> int:
    """Slots per expert per rank with drops on: ceil(tokens / experts × capacity factor × k), at least min_capacity
    (top-2 doubles the factor, as both libraries do)."""
    return max(math.ceil(BATCH * SEQUENCE / EXPERTS * CAPACITY_FACTOR * k), MIN_CAPACITY)


def run(reps: int, repo: Path, quick: bool = False) -> dict:
    with_deepspeed = workers.deepspeed_available()
    if not with_deepspeed:
        print(f"  moe: DeepSpeed is not installed for {sys.executable}: dsrun at ep_size 2 vs 1 only; "
              f"{workers.PEERS_HINT}", file=sys.stderr)
    impls = ["dsrun", "dsrun-ep1", *(["deepspeed"] if with_deepspeed else [])]
    rounds, per_round, warmup = (1, 1, 1) if quick else (5, 2, 3)
    worker_args = ["--reps", str(reps), "--rounds", str(rounds), "--steps-per-round", str(per_round),
                   "--warmup", str(warmup), "--impls", *impls]
    load_start = os.getloadavg()
    result = workers.run_worker(worker_args, with_deepspeed, repo, worker=WORKER)
    ranks = result["ranks"]
    return {
        "impls": impls,
        "with_deepspeed": with_deepspeed,
        "deepspeed_errors": sorted({e for r in ranks for e in r["errors"].values()}),
        "rounds": rounds,
        "steps_per_round": per_round,
        "warmup_steps": warmup,
        "loadavg": {"start": load_start, "end": os.getloadavg()},
        "facts": result["facts"],
        "command": result["command"],
        "failed_attempts": result["failed_attempts"],
        "ranks": ranks,
        "summary": summarize(ranks),
    }


def _max_over_ranks(ranks: list[dict], index: int, pair: str, key: str) -> float | None:
    values = [r["configs"][index]["checks"].get(pair, {}).get(key) for r in ranks]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def summarize(ranks: list[dict]) -> dict:
    rows = []
    for index, config in enumerate(ranks[0]["configs"]):
        times = config["times"]
        # CPU seconds of both ranks added per repetition: the work done, which other load hardly moves.
        cpu = {name: [sum(rep) for rep in zip(*(r["configs"][index]["cpu_times"][name] for r in ranks), strict=True)]
               for name in times}
        counts = [r["configs"][index]["exp_counts"] for r in ranks]
        row: dict = {"k": config["k"], "capacity": config["capacity"], "exp_counts": counts,
                     "dropped": sum(max(c - config["capacity"], 0) for rank in counts for c in rank),
                     "seconds": {name: summary(values) for name, values in times.items()},
                     "ratios": {}, "per_rep_ratios": {}, "checks": {}}
        for other in ("dsrun-ep1", "deepspeed"):
            if other in times:
                per_rep = paired_ratios(times["dsrun"], times[other])
                row["per_rep_ratios"][f"dsrun/{other}"] = per_rep
                row["ratios"][f"dsrun/{other}"] = summary(per_rep)
                row["ratios"][f"dsrun/{other} cpu"] = summary(paired_ratios(cpu["dsrun"], cpu[other]))
        for a, b in combinations(list(times), 2):
            pair = f"{a}-{b}"
            row["checks"][pair] = {key: _max_over_ranks(ranks, index, pair, key)
                                   for key in ("output", "l_aux", "input_grad", "gate_grad", "expert_grad")}
            row["checks"][pair]["same_counts"] = all(
                r["configs"][index]["checks"].get(pair, {}).get("same_counts", False) for r in ranks)
        vs_ds = row["ratios"].get("dsrun/deepspeed")
        row["goal_vs_deepspeed"] = None if vs_ds is None else vs_ds["median"] < GOAL_VS_DEEPSPEED
        rows.append(row)
    placement = [{"rank": rank, **entry} for rank, r in enumerate(ranks) for entry in r["placement"]]
    return {"rows": rows, "placement": placement, "goal": {"dsrun/deepspeed_below": GOAL_VS_DEEPSPEED}}


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids)


def table(result: dict) -> list[str]:
    peers = "deepspeed" in result["impls"]
    s = result["summary"]
    head = "| top-k | capacity | dsrun ep 2 ms | dsrun ep 1 ms |" + (" DeepSpeed ep 2 ms |" if peers else "")
    head += " dsrun / dsrun ep 1 | dsrun / dsrun ep 1, CPU s |"
    if peers:
        head += " dsrun / DeepSpeed | goal < 1 | dsrun / DeepSpeed, CPU s |"
    lines = [head, "|---" * head.count(" |") + "|"]
    for row in s["rows"]:
        seconds, ratios = row["seconds"], row["ratios"]
        ms = {name: {key: value * 1e3 if key != "n" else value for key, value in stat.items()}
              for name, stat in seconds.items()}
        cells = [f"top-{row['k']}", str(row["capacity"]), _spread(ms["dsrun"], 1), _spread(ms["dsrun-ep1"], 1)]
        if peers:
            cells.append(_spread(ms["deepspeed"], 1) if "deepspeed" in ms else "failed")
        cells += [_spread(ratios["dsrun/dsrun-ep1"], 2), _spread(ratios["dsrun/dsrun-ep1 cpu"], 2)]
        if peers:
            vs_ds, vs_ds_cpu = ratios.get("dsrun/deepspeed"), ratios.get("dsrun/deepspeed cpu")
            cells += [_spread(vs_ds, 2) if vs_ds else "–", _verdict(row["goal_vs_deepspeed"]),
                      _spread(vs_ds_cpu, 2) if vs_ds_cpu else "–"]
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "| top-k | pair | max \\|Δ output\\| | \\|Δ l_aux\\| | same exp_counts | max \\|Δ input grad\\| "
              "| max \\|Δ gate grad\\| | max \\|Δ expert grad\\| |", "|---|---|---|---|---|---|---|---|"]
    for row in s["rows"]:
        for pair, check in row["checks"].items():
            lines.append(f"| top-{row['k']} | {pair.replace('-ep1', ' ep1').replace('-', ' − ', 1)} "
                         f"| {_loss(check['output'])} | {_loss(check['l_aux'])} "
                         f"| {'yes' if check['same_counts'] else '**no**'} | {_loss(check['input_grad'])} "
                         f"| {_loss(check['gate_grad'])} | {_loss(check['expert_grad'])} |")

    lines += ["", "| rank | implementation | ep_size | global experts held | expert MiB | all experts MiB "
              "| share | expected 1 / ep_size |", "|---|---|---|---|---|---|---|---|"]
    for p in s["placement"]:
        share = p["expert_bytes"] / p["all_expert_bytes"]
        expected = 1 / p["ep_size"]
        lines.append(f"| {p['rank']} | {p['impl']} | {p['ep_size']} | {_ids(p['global_ids'])} "
                     f"| {p['expert_bytes'] / MIB:.2f} | {p['all_expert_bytes'] / MIB:.2f} | {share:.3f} "
                     f"| {expected:.3f}{'' if abs(share - expected) < 1e-12 else ' **no**'} |")

    facts = result["facts"]
    routing = "; ".join(f"top-{row['k']}: " + ", ".join(f"rank {i} {c}" for i, c in enumerate(row["exp_counts"]))
                        + f", {row['dropped']} routes over capacity dropped" for row in s["rows"])
    per_rep = "; ".join(f"top-{row['k']} {key}: " + ", ".join(f"{x:.2f}" for x in values)
                        for row in s["rows"] for key, values in row["per_rep_ratios"].items())
    load = result["loadavg"]
    lines += [
        "",
        f"One MoE block, hidden {facts['hidden']}, {facts['experts']} experts ({facts['hidden']} → {facts['ffn']} → "
        f"{facts['hidden']} MLPs, {facts['expert_parameters']:,} parameters each), {facts['world']} ranks on gloo, "
        f"{facts['threads']} thread(s) per rank, {facts['tokens']} tokens per rank, capacity factor "
        f"{facts['capacity_factor']}, drop_tokens and use_rts on, no gate noise; milliseconds per forward+backward "
        f"(output projection + {facts['aux_coef']} × l_aux). {result['warmup_steps']} warm-up steps, then per "
        f"repetition {result['rounds']} rounds of {result['steps_per_round']} timed steps of each implementation in "
        f"turn, the order rotating every repetition. Per-repetition ratios: {per_rep}. Checks: one step per "
        "implementation from the same weights and the same random draws (seeded alike before each), largest "
        "difference over both ranks; ep 1's expert gradients summed over the ranks (at ep 2 an expert's gradient "
        f"already holds both ranks' tokens). Tokens per expert in that step (exp_counts) {routing}. "
        f"Load average (1 min) {load['start'][0]:.2f} before, {load['end'][0]:.2f} after."
        + (f" DeepSpeed {facts['deepspeed']}." if "deepspeed" in facts else ""),
    ]
    if not peers:
        lines.append("DeepSpeed was not installed in this run's interpreter: `bench/peers.sh --only moe` adds it.")
    for error in result.get("deepspeed_errors", []):
        lines.append(f"DeepSpeed failed: `{error}`")
    return lines
