"""Markdown tables of the train-step and memory benchmarks (report.py puts them into bench/README.md)."""

from __future__ import annotations

MIB = 1024 * 1024


def _spread(s: dict, digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _verdict(met: bool | None) -> str:
    return "–" if met is None else ("met" if met else "**missed**")


def _loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.1e}"


def train_step_table(result: dict) -> list[str]:
    impls = result["impls"]
    peers = "deepspeed" in impls
    head = "| stage | precision | dsrun s/step | hand-written s/step |"
    rule = "|---|---|---|---|"
    if peers:
        head += " DeepSpeed s/step |"
        rule += "---|"
    head += " dsrun / hand | goal ≤ 1.03 | dsrun / hand, CPU s |"
    rule += "---|---|---|"
    if peers:
        head += " dsrun / DeepSpeed | goal < 1 | dsrun / DeepSpeed, CPU s |"
        rule += "---|---|---|"
    pairs = ["dsrun-hand", *(["dsrun-deepspeed", "hand-deepspeed"] if peers else [])]
    head += "".join(f" max \\|loss {p.replace('-', ' − ')}\\| |" for p in pairs)
    rule += "---|" * len(pairs)
    lines = [head, rule]
    for row in result["summary"]["rows"]:
        seconds, ratios = row["seconds"], row["ratios"]
        cells = [f"z{row['stage']}", row["precision"], _spread(seconds["dsrun"]), _spread(seconds["hand"])]
        if peers:
            cells.append(_spread(seconds["deepspeed"]) if "deepspeed" in seconds else "failed")
        cells += [_spread(ratios["dsrun/hand"], 2), _verdict(row["goals"]["vs_hand"]),
                  _spread(ratios["dsrun/hand cpu"], 2)]
        if peers:
            vs_ds, vs_ds_cpu = ratios.get("dsrun/deepspeed"), ratios.get("dsrun/deepspeed cpu")
            cells += [_spread(vs_ds, 2) if vs_ds else "–", _verdict(row["goals"]["vs_deepspeed"]),
                      _spread(vs_ds_cpu, 2) if vs_ds_cpu else "–"]
        cells += [_loss(row["losses"].get(p)) for p in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    facts = result["facts"]
    first_last = result["summary"]["rows"][0]["loss_first_last"]
    lines += [
        "",
        f"{facts['parameters']:,} parameters, {facts['world']} ranks on gloo, {facts['threads']} thread(s) per rank; "
        f"{result['steps_per_rep']} steps per repetition after {result['warmup_steps']} warm-up steps; ratios are "
        f"per repetition (the implementations ran back to back). The goals are judged on wall time; the CPU-s "
        f"ratio (CPU seconds of both ranks) hardly moves with other load on the machine. Loss columns: the "
        f"largest difference over every micro-batch of both ranks (dsrun's rank-0 loss went from "
        f"{first_last[0]:.3f} to {first_last[1]:.3f})."
        + (f" DeepSpeed {facts['deepspeed']}." if "deepspeed" in facts else ""),
    ]
    if result.get("communication_data_type"):
        lines.append(f"Gradient sums: dsrun and DeepSpeed both in {result['communication_data_type']}"
                     " (`communication_data_type` in their config); hand-written DDP in bf16 (z0-z1), FSDP2 in fp32"
                     " (z2-z3).")
    else:
        lines.append("Gradient sums, each implementation's default: dsrun in fp32 (bf16 rows at z0-z1 with 2 ranks:"
                     " in bf16, which gives the fp32 sum's bits); DeepSpeed in the training dtype; hand-written DDP"
                     " in the training dtype (z0-z1), FSDP2 in fp32 (z2-z3).")
    if not peers:
        lines.append("DeepSpeed was not installed in this run's interpreter: `make bench-peers` adds it.")
    for error in result.get("deepspeed_errors", []):
        lines.append(f"DeepSpeed failed: `{error}`")
    return lines


def _mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def memory_table(result: dict) -> list[str]:
    lines = [
        "| stage | precision | implementation | model state MiB (params / grads / optimizer) | ZeRO formula MiB "
        "| state / formula | goal ±5% | peak RSS MiB | RSS growth MiB | dsrun RSS / DeepSpeed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["summary"]["rows"]:
        state = row.get("model_state")
        if state:
            split = f"{_mib(state['total'])} ({_mib(state['params'])} / {_mib(state['grads'])} / " \
                    f"{_mib(state['optimizer'])})"
            ratio = f"{row['vs_formula']:.3f}"
            goal = _verdict(row["within_tolerance"]) if row["impl"] == "dsrun" else "–"
        else:
            split, ratio, goal = "not counted", "–", "–"
        vs_ds = f"{row['rss_vs_deepspeed']:.2f}" if "rss_vs_deepspeed" in row else "–"
        lines.append(f"| z{row['stage']} | {row['precision']} | {row['impl']} | {split} | {_mib(row['formula_bytes'])} "
                     f"| {ratio} | {goal} | {_mib(row['rss_peak_bytes'])} | {_mib(row['rss_growth_bytes'])} "
                     f"| {vs_ds} |")
    lines += [
        "",
        "Per rank, the rank holding more. Model state is counted from the tensors during the last update; the "
        "formula is the ZeRO paper's (fp32: 16Ψ, 8Ψ+8Ψ/N, 4Ψ+12Ψ/N, 16Ψ/N; bf16: 16Ψ, 4Ψ+12Ψ/N, 2Ψ+14Ψ/N, 16Ψ/N). "
        "Peak RSS is `ru_maxrss` of a fresh process per row; growth is peak minus the RSS after imports and "
        "process-group start (DeepSpeed's larger import is in its peak, not in its growth).",
    ]
    if not result["with_deepspeed"]:
        lines.append("DeepSpeed was not installed in this run's interpreter: `make bench-peers` adds it.")
    for error in result.get("deepspeed_errors", []):
        lines.append(f"DeepSpeed failed: `{error}`")
    return lines
