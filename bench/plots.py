"""PNG figures next to a run's JSON, for the benchmarks where a picture says more than the table.

plan-scale: seconds against ranks on log-log axes, with a line of slope 1 through the smallest in-process plan, so a
superlinear plan shows as a curve bending away from it. train-step: the per-repetition ratios (median, min–max) per
stage and precision, against the goals. matplotlib comes with the dev requirements; without it no figure is drawn.
"""

from __future__ import annotations

from pathlib import Path


def _figure():
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot, no GUI backend
    except ImportError:
        return None
    return Figure


def plan_scale_png(result: dict, path: Path, Figure) -> None:
    sizes = result["summary"]["sizes"]
    ranks = [s["ranks"] for s in sizes]
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for key, label in (("cli_s", "dsrun --dry-run --json (whole command)"), ("in_process_s", "plan + JSON, in-process"),
                       ("plan_s", "plan_launch"), ("render_s", "plan_json")):
        medians = [s[key]["median"] for s in sizes]
        low = [m - s[key]["min"] for m, s in zip(medians, sizes, strict=True)]
        high = [s[key]["max"] - m for m, s in zip(medians, sizes, strict=True)]
        ax.errorbar(ranks, medians, yerr=[low, high], marker="o", capsize=3, label=label)
    first = sizes[0]["in_process_s"]["median"]
    ax.plot(ranks, [first * r / ranks[0] for r in ranks], linestyle=":", color="grey", label="linear growth")
    goal = result["summary"]["goal"]
    ax.axhline(goal["cli_seconds_below"], linestyle="--", color="red", linewidth=1,
               label=f"goal for the command at {goal['hosts']} hosts")
    ax.set(xscale="log", yscale="log", xlabel="ranks (hosts × 8 slots)", ylabel="seconds",
           title="Planning a launch: time against cluster size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def train_step_png(result: dict, path: Path, Figure) -> None:
    rows = result["summary"]["rows"]
    labels = [f"z{r['stage']} {r['precision']}" for r in rows]
    fig = Figure(figsize=(7.2, 4.2))
    ax = fig.add_subplot()
    pairs = [("dsrun/hand", "dsrun / hand-written"), ("dsrun/deepspeed", "dsrun / DeepSpeed")]
    shown = [(key, label) for key, label in pairs if any(key in r["ratios"] for r in rows)]
    width = 0.8 / max(1, len(shown))
    for i, (key, label) in enumerate(shown):
        xs = [j + (i - (len(shown) - 1) / 2) * width for j in range(len(rows))]
        stats = [r["ratios"].get(key) for r in rows]
        medians = [s["median"] if s else float("nan") for s in stats]
        low = [s["median"] - s["min"] if s else 0 for s in stats]
        high = [s["max"] - s["median"] if s else 0 for s in stats]
        ax.bar(xs, medians, width=width, yerr=[low, high], capsize=3, label=label)
    goals = result["summary"]["goal"]
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(goals["dsrun/hand_at_most"], linestyle="--", color="red", linewidth=1, label="goal vs hand-written")
    ax.set_xticks(range(len(rows)), labels)
    ax.set(ylabel="step time ratio (lower: dsrun faster)", title="Training step time, per-repetition ratios")
    ax.set_ylim(bottom=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


PLOTS = {"plan-scale": plan_scale_png, "train-step": train_step_png, "train-step-bf16-sum": train_step_png}


def png_path(json_path: Path, name: str) -> Path:
    return json_path.with_name(f"{json_path.stem}-{name}.png")


def write_plots(run: dict, json_path: Path) -> list[Path]:
    """The figures of the run's benchmarks that have one; none (and a message) without matplotlib."""
    wanted = [name for name in run["benchmarks"] if name in PLOTS]
    if not wanted:
        return []
    Figure = _figure()
    if Figure is None:
        print("bench: matplotlib is not installed here: no figures drawn", flush=True)
        return []
    written = []
    for name in wanted:
        path = png_path(json_path, name)
        PLOTS[name](run["benchmarks"][name], path, Figure)
        written.append(path)
    return written
