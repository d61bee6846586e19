"""Results to files: one JSON per run (every raw number), and the Markdown table in bench/README.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.checkpoint_io import table as checkpoint_table
from bench.moe_bench import table as moe_table
from bench.pipeline_bench import table as pipeline_table
from bench.plots import png_path
from bench.report_training import memory_table, train_step_table

START = "<!-- results:start -->"
END = "<!-- results:end -->"


def write_run(run: dict, out_dir: Path, stamp: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}.json"
    n = 1
    while path.exists():  # two runs in the same second keep both results
        path = out_dir / f"{stamp}-{n}.json"
        n += 1
    # Written to a .tmp (git-ignored) and renamed: an interrupted run never leaves half a JSON for the table to read.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(run, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def latest_per_benchmark(out_dir: Path) -> dict[str, tuple[Path, dict]]:
    """The newest run of each benchmark, so `--only launch` refreshes its own section and keeps the others."""
    runs = []
    for path in out_dir.glob("*.json"):
        try:
            runs.append((path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError):
            continue  # a hand-edited or foreign file must not break the report
    latest: dict[str, tuple[Path, dict]] = {}
    # By the recorded date; the file's mtime breaks ties between runs started in the same second.
    for path, run in sorted(runs, key=lambda item: (item[1].get("date", ""), item[0].stat().st_mtime_ns)):
        for name, result in run.get("benchmarks", {}).items():
            latest[section_name(name, result)] = (path, run)
    return latest


def section_name(name: str, result: dict) -> str:
    """A run with DeepSpeed (make bench-peers) has its own section: a later `make bench`, which cannot include
    DeepSpeed, must not replace those figures."""
    return f"{name} (with DeepSpeed)" if isinstance(result, dict) and result.get("with_deepspeed") else name


def _spread(s: dict, scale: float = 1.0, digits: int = 3) -> str:
    return f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f})"


def _source(path: Path, run: dict) -> str:
    m = run["machine"]
    return (f"_{path.name} · {run['date']} · {run['reps']} reps · {m['cpu_count']} CPUs ({m['cpu_model']}) · "
            f"Python {m['python']} · torch {m['torch']}_")


def _met(goal: dict) -> str:
    return "**met**" if goal["met"] else "**missed**"


def launch_table(result: dict) -> list[str]:
    s = result["summary"]
    goal = s["goal"]
    return [
        "| dsrun s | torchrun s | dsrun / torchrun | goal |",
        "|---|---|---|---|",
        f"| {_spread(s['dsrun_s'])} | {_spread(s['torchrun_s'])} | {_spread(s['ratio'], digits=2)} "
        f"| ≤ {goal['ratio_at_most']}: {_met(goal)} |",
    ]


def plan_scale_table(result: dict) -> list[str]:
    s = result["summary"]
    slots = result["slots_per_host"]
    lines = [
        "| hosts × slots | ranks | `dsrun --dry-run --json` s | plan_launch ms | plan_json ms "
        "| µs / rank (in-process) |",
        "|---|---|---|---|---|---|",
    ]
    for size in s["sizes"]:
        lines.append(
            f"| {size['hosts']} × {slots} | {size['ranks']} | {_spread(size['cli_s'])} "
            f"| {_spread(size['plan_s'], 1e3, 1)} | {_spread(size['render_s'], 1e3, 1)} "
            f"| {size['in_process_us_per_rank']:.1f} |"
        )
    growth, goal = s["per_rank_growth"], s["goal"]
    lines += [
        "",
        f"Per-rank cost at {growth['to_hosts']} hosts / at {growth['from_hosts']} hosts: **{growth['ratio']:.2f}** "
        "(≈ 1 linear, well above 1 superlinear). "
        f"Goal {goal['hosts']} hosts < {goal['cli_seconds_below']:g} s (whole command, median): {_met(goal)}.",
    ]
    return lines


TABLES = {"launch": launch_table, "plan-scale": plan_scale_table, "train-step": train_step_table,
          "train-step-bf16-sum": train_step_table, "memory": memory_table, "checkpoint": checkpoint_table,
          "pipeline": pipeline_table, "moe": moe_table}


def results_markdown(latest: dict[str, tuple[Path, dict]], readme_dir: Path) -> str:
    """The tables of the newest runs; a run's figure (plots.py), when it exists, is linked relative to the README."""
    lines: list[str] = []
    for name, table in TABLES.items():
        for section in (name, f"{name} (with DeepSpeed)"):
            if section not in latest:
                continue
            path, run = latest[section]
            lines += [f"### {section}", "", _source(path, run), "", *table(run["benchmarks"][name]), ""]
            figure = png_path(path, name)
            if figure.is_file():
                lines += [f"![{section}]({os.path.relpath(figure, readme_dir)})", ""]
    lines.append("Figures: median (min–max) over the repetitions of one run; ratios are per A/B pair of that run.")
    return "\n".join(lines)


def update_readme(readme: Path, markdown: str) -> None:
    """Replace what is between the markers; a README without them gets them appended, the rest is left alone."""
    block = f"{START}\n{markdown}\n{END}"
    text = readme.read_text() if readme.exists() else ""
    if START in text and END in text and text.index(START) < text.index(END):
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    readme.write_text(text)
