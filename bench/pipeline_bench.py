"""Benchmark "pipeline": seconds per train_batch of dsrun's PipelineEngine against hand-written
torch.distributed.pipelining (and DeepSpeed's pipeline engine).

8 pre-LN MLP blocks (width 256, hidden 1024, 4.2M parameters) and a cross-entropy loss, 2 ranks on gloo as 2
pipeline stages × 1 data-parallel replica, the blocks split 4 + 4; micro-batch 16, 4 micro-batches per train_batch
(gradient_accumulation_steps), the 1F1B schedule, AdamW, clipping 1.0 by the norm over both stages. One worker pair
(bench/pipeline_worker.py) runs every implementation on the same initial weights and data, interleaved; their
losses must agree. Also per rank: the parameter bytes each stage holds against its layers' share of the model.
"""

from __future__ import annotations

import os
import sys
from itertools import combinations
from pathlib import Path

from bench import workers
from bench.report_training import _loss, _spread, _verdict
from bench.stats import paired_ratios, summary
from bench.train_setup import adamw_options

NAME = "pipeline"
WORKER = Path(__file__).resolve().parent / "pipeline_worker.py"
STAGES = 2
BLOCKS = 8
WIDTH = 256
HIDDEN = 1024
MICRO_BATCH = 16
ACCUMULATION = 4  # micro-batches per train_batch
SEED = 0
GOAL_VS_HAND = 1.05  # dsrun / hand-written, median of the per-repetition ratios
GOAL_VS_DEEPSPEED = 1.0  # dsrun / DeepSpeed: below this
MIB = 1024 * 1024


def stage_bounds() -> list[int]:
    """The layers of each stage, as partition_method="uniform" splits them: [0, 4, 8]."""
    per = BLOCKS // STAGES
    return [i * per for i in range(STAGES)] + [BLOCKS]


def pipe_config() -> dict:
    """The one config dsrun.initialize and deepspeed.initialize are given (1F1B: both engines' default)."""
    options = adamw_options()
    return {
        "train_micro_batch_size_per_gpu": MICRO_BATCH,
        "gradient_accumulation_steps": ACCUMULATION,
        "optimizer": {"type": "AdamW", "params": {**options, "betas": list(options["betas"])}},
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 0},
        # Progress lines would be printed (and formatted) inside the timed batches.
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def run(reps: int, repo: Path, quick: bool = False) -> dict:
    with_deepspeed = workers.deepspeed_available()
    if not with_deepspeed:
        print(f"  pipeline: DeepSpeed is not installed for {sys.executable}: dsrun vs hand-written only; "
              f"{workers.PEERS_HINT}", file=sys.stderr)
    # hand-fused: the hand-written loop with torch's fused AdamW, as dsrun builds it on CPU. A note below the table,
    # not a goal: it tells the pipeline's cost apart from the optimizer's.
    impls = ["dsrun", "hand", "hand-fused", *(["deepspeed"] if with_deepspeed else [])]
    rounds, per_round, warmup = (1, 1, 1) if quick else (5, 2, 5)
    worker_args = ["--reps", str(reps), "--rounds", str(rounds), "--batches-per-round", str(per_round),
                   "--warmup", str(warmup), "--impls", *impls]
    load_start = os.getloadavg()
    result = workers.run_worker(worker_args, with_deepspeed, repo, worker=WORKER)
    ranks = result["ranks"]
    measured = {
        "times": ranks[0]["times"],
        "orders": ranks[0]["orders"],
        "errors": ranks[0]["errors"],
        "model_bytes": ranks[0]["model_bytes"],
        # Both ranks' CPU seconds and stage facts; losses exist on the last stage only.
        "cpu_times_by_rank": [r["cpu_times"] for r in ranks],
        "losses_by_rank": [r["losses"] for r in ranks],
        "stages_by_rank": [r["stages"] for r in ranks],
    }
    return {
        "impls": impls,
        "with_deepspeed": with_deepspeed,
        "deepspeed_errors": sorted(set(measured["errors"].values())),
        "rounds": rounds,
        "batches_per_round": per_round,
        "warmup_batches": warmup,
        "loadavg": {"start": load_start, "end": os.getloadavg()},
        "facts": result["facts"],
        "command": result["command"],
        "failed_attempts": result["failed_attempts"],
        "measured": measured,
        "summary": summarize(measured, impls),
    }


def _loss_agreement(losses_by_rank: list[dict[str, list[float]]], a: str, b: str) -> float | None:
    diffs = [abs(x - y) for rank in losses_by_rank if rank.get(a) and rank.get(b)
             for x, y in zip(rank[a], rank[b], strict=True)]
    return max(diffs) if diffs else None


def summarize(measured: dict, impls: list[str]) -> dict:
    times = measured["times"]
    cpu = {name: [sum(rep) for rep in zip(*(r[name] for r in measured["cpu_times_by_rank"]), strict=True)]
           for name in times}
    row: dict = {"seconds": {name: summary(values) for name, values in times.items()},
                 "cpu_seconds": {name: summary(values) for name, values in cpu.items()},
                 "ratios": {}, "per_rep_ratios": {}, "losses": {}}
    for other in ("hand", "hand-fused", "deepspeed"):
        if other in times and "dsrun" in times:
            per_rep = paired_ratios(times["dsrun"], times[other])
            row["per_rep_ratios"][f"dsrun/{other}"] = per_rep
            row["ratios"][f"dsrun/{other}"] = summary(per_rep)
            row["ratios"][f"dsrun/{other} cpu"] = summary(paired_ratios(cpu["dsrun"], cpu[other]))
    for a, b in combinations([i for i in impls if i in times], 2):
        row["losses"][f"{a}-{b}"] = _loss_agreement(measured["losses_by_rank"], a, b)
    last = next((rank["dsrun"] for rank in measured["losses_by_rank"] if rank.get("dsrun")), [])
    row["loss_first_last"] = [last[0], last[-1]] if last else None
    vs_hand, vs_ds = row["ratios"].get("dsrun/hand"), row["ratios"].get("dsrun/deepspeed")
    row["goals"] = {
        "vs_hand": None if vs_hand is None else vs_hand["median"] <= GOAL_VS_HAND,
        "vs_deepspeed": None if vs_ds is None else vs_ds["median"] < GOAL_VS_DEEPSPEED,
    }
    stages = []
    whole = measured["model_bytes"]
    for rank, per_impl in enumerate(measured["stages_by_rank"]):
        for impl in impls:
            if impl not in per_impl or impl == "hand-fused":  # the same stage module as hand
                continue
            s = per_impl[impl]
            stages.append({"rank": rank, "impl": impl, "stage": s["stage"], "layers": s["layers"],
                           "param_bytes": s["param_bytes"], "stage_layer_bytes": s["stage_layer_bytes"],
                           "share": s["param_bytes"] / whole, "exact": s["param_bytes"] == s["stage_layer_bytes"],
                           "model_state": s["model_state"], "schedule": s["schedule"]})
    return {"rows": [row], "stages": stages, "model_bytes": whole,
            "goal": {"dsrun/hand_at_most": GOAL_VS_HAND, "dsrun/deepspeed_below": GOAL_VS_DEEPSPEED}}


def table(result: dict) -> list[str]:
    impls = result["impls"]
    peers = "deepspeed" in impls
    s = result["summary"]
    row = s["rows"][0]
    seconds, ratios = row["seconds"], row["ratios"]
    head = "| dsrun s/batch | hand-written s/batch |" + (" DeepSpeed s/batch |" if peers else "")
    head += " dsrun / hand | goal ≤ 1.05 | dsrun / hand, CPU s |"
    if peers:
        head += " dsrun / DeepSpeed | goal < 1 | dsrun / DeepSpeed, CPU s |"
    pairs = ["dsrun-hand", *(["dsrun-deepspeed", "hand-deepspeed"] if peers else [])]
    head += "".join(f" max \\|loss {p.replace('-', ' − ')}\\| |" for p in pairs)
    cells = [_spread(seconds["dsrun"]), _spread(seconds["hand"])]
    if peers:
        cells.append(_spread(seconds["deepspeed"]) if "deepspeed" in seconds else "failed")
    cells += [_spread(ratios["dsrun/hand"], 2), _verdict(row["goals"]["vs_hand"]), _spread(ratios["dsrun/hand cpu"], 2)]
    if peers:
        vs_ds, vs_ds_cpu = ratios.get("dsrun/deepspeed"), ratios.get("dsrun/deepspeed cpu")
        cells += [_spread(vs_ds, 2) if vs_ds else "–", _verdict(row["goals"]["vs_deepspeed"]),
                  _spread(vs_ds_cpu, 2) if vs_ds_cpu else "–"]
    cells += [_loss(row["losses"].get(p)) for p in pairs]
    lines = [head, "|---" * head.count(" |") + "|", "| " + " | ".join(cells) + " |", ""]

    lines += ["| rank (stage) | implementation | layers | parameter MiB | its layers MiB | share of the model "
              "| exactly its layers | model state MiB (params / grads / optimizer) |",
              "|---|---|---|---|---|---|---|---|"]
    for st in s["stages"]:
        state = st["model_state"]
        split = (f"{state['total'] / MIB:.1f} ({state['params'] / MIB:.1f} / {state['grads'] / MIB:.1f} / "
                 f"{state['optimizer'] / MIB:.1f})") if state else "not counted"
        lines.append(f"| {st['rank']} ({st['stage']}) | {st['impl']} | {st['layers'][0]}–{st['layers'][1] - 1} "
                     f"| {st['param_bytes'] / MIB:.2f} | {st['stage_layer_bytes'] / MIB:.2f} | {st['share']:.3f} "
                     f"| {'yes' if st['exact'] else '**no**'} | {split} |")

    facts = result["facts"]
    first_last = row["loss_first_last"]
    per_rep = "; ".join(f"{key}: " + ", ".join(f"{x:.2f}" for x in values)
                        for key, values in row["per_rep_ratios"].items())
    load = result["loadavg"]
    lines += [
        "",
        f"{facts['parameters']:,} parameters ({s['model_bytes'] / MIB:.2f} MiB fp32) in {BLOCKS} blocks, "
        f"{facts['world']} ranks on gloo = {facts['stages']} stages × 1, {facts['threads']} thread(s) per rank; "
        f"micro-batch {MICRO_BATCH}, {ACCUMULATION} micro-batches per train_batch, 1F1B; "
        f"{result['warmup_batches']} warm-up train_batch calls, then per repetition {result['rounds']} rounds of "
        f"{result['batches_per_round']} timed calls of each implementation in turn, the order rotating every "
        f"repetition. Per-repetition ratios: {per_rep}. Loss columns: the largest "
        "difference over every train_batch's mean loss (last stage)"
        + (f"; dsrun's went from {first_last[0]:.3f} to {first_last[1]:.3f}" if first_last else "")
        + f". Load average (1 min) {load['start'][0]:.2f} before, {load['end'][0]:.2f} after."
        + (f" The hand-written loop with torch's fused AdamW (dsrun's choice on CPU) instead of the default one: "
           f"{_spread(seconds['hand-fused'])} s/batch, dsrun / it {_spread(ratios['dsrun/hand-fused'], 2)} "
           f"(CPU s {_spread(ratios['dsrun/hand-fused cpu'], 2)}), "
           f"max |loss dsrun − it| {_loss(row['losses'].get('dsrun-hand-fused'))}."
           if "dsrun/hand-fused" in ratios else "")
        + (f" DeepSpeed {facts['deepspeed']}." if "deepspeed" in facts else ""),
    ]
    if peers:
        lines.append("DeepSpeed's losses part from the others' because it clips by another norm: its fp32 "
                     "`clip_grad_norm_` (deepspeed/runtime/utils.py) counts a parameter not marked model-parallel "
                     "only on model-parallel rank 0, and its pipeline grid gives each stage its stage index as that "
                     "rank, so the norm is the first stage's gradients alone (checked: the hand-written loop clipping "
                     "by stage 0's norm follows DeepSpeed's losses to 1e-6, as all three do with clipping off).")
    else:
        lines.append("DeepSpeed was not installed in this run's interpreter: `bench/peers.sh --only pipeline` adds it.")
    for error in result.get("deepspeed_errors", []):
        lines.append(f"DeepSpeed failed: `{error}`")
    return lines
