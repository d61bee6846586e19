"""Smoke test of the benchmark harness: a --quick run writes one complete JSON and a results table.

It checks the harness works, not how fast anything is: timings are never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = next(p for p in Path(__file__).resolve().parents if (p / "bench" / "run.py").is_file())


def test_quick_plan_scale_run_writes_json_and_table(tmp_path: Path) -> None:
    out, readme = tmp_path / "results", tmp_path / "README.md"
    readme.write_text("# bench\n\nintro\n\n<!-- results:start -->\nold table\n<!-- results:end -->\n\nafter\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", "plan-scale",
         "--out", str(out), "--readme", str(readme)],
        cwd=tmp_path,  # the harness must not depend on the caller's working directory
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr

    [result] = out.glob("*.json")
    run = json.loads(result.read_text())
    assert {"date", "reps", "machine", "benchmarks"} <= run.keys()
    assert run["reps"] == 2 and run["quick"] is True
    assert {"cpu_count", "platform", "python", "torch"} <= run["machine"].keys()
    assert list(run["benchmarks"]) == ["plan-scale"]
    bench = run["benchmarks"]["plan-scale"]
    assert {(r["rep"], r["hosts"]) for r in bench["raw"]} == {(rep, h) for rep in range(2) for h in (8, 128, 1024)}
    assert all({"cli_s", "plan_s", "render_s", "ranks"} <= r.keys() for r in bench["raw"])
    assert [s["ranks"] for s in bench["summary"]["sizes"]] == [64, 1024, 8192]

    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith("# bench\n\nintro\n") and text.endswith("after\n")
    table = text.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    assert "### plan-scale" in table and "| 1024 × 8 | 8192 |" in table
    assert "### launch" not in table
    [figure] = out.glob("*-plan-scale.png")  # the figure beside the JSON, linked from the table
    assert figure.read_bytes().startswith(b"\x89PNG") and f"![plan-scale](results/{figure.name})" in table
    assert not list(out.glob("*.tmp"))


def test_zero_formula_per_parameter_at_two_ranks() -> None:
    from bench.memory import formula_bytes_per_param

    # ZeRO paper at N=2: fp32 16/12/10/8 B per parameter, mixed precision 16/10/9/8.
    assert [formula_bytes_per_param(s, "fp32", 2) for s in range(4)] == [16, 12, 10, 8]
    assert [formula_bytes_per_param(s, "bf16", 2) for s in range(4)] == [16, 10, 9, 8]


def test_train_step_summary_pairs_repetitions_and_compares_losses() -> None:
    from bench.train_step import summarize

    config = {
        "stage": 0, "precision": "fp32",
        "times": {"dsrun": [1.0, 2.2], "hand": [1.0, 2.0]},
        "cpu_times_by_rank": [{"dsrun": [1.0, 1.0], "hand": [1.0, 0.5]}, {"dsrun": [1.0, 1.0], "hand": [1.0, 0.5]}],
        "losses_by_rank": [{"dsrun": [7.0, 6.5], "hand": [7.0, 6.25]}, {"dsrun": [7.0, 6.0], "hand": [7.0, 6.0]}],
    }
    [row] = summarize([config], ["dsrun", "hand"])["rows"]
    # Per-repetition ratios 1.0 and 1.1: their median, not the ratio of the medians (1.6 / 1.5).
    assert row["ratios"]["dsrun/hand"]["median"] == pytest.approx(1.05)
    assert row["ratios"]["dsrun/hand cpu"]["max"] == 2.0  # both ranks' CPU seconds added per repetition
    assert row["losses"]["dsrun-hand"] == 0.25  # the largest gap over every micro-batch of every rank
    assert row["goals"] == {"vs_hand": False, "vs_deepspeed": None}


def test_runs_with_deepspeed_keep_their_own_section(tmp_path: Path) -> None:
    from bench import report

    def result(with_deepspeed: bool) -> dict:
        return {"with_deepspeed": with_deepspeed, "impls": ["dsrun", "hand"], "raw": [],
                "summary": {"rows": [], "goal": {}}}

    machine = {"cpu_count": 2, "cpu_model": "x", "python": "3", "torch": "2"}
    for stamp, with_deepspeed in (("a", True), ("b", False)):  # the run without DeepSpeed is the newer one
        run = {"date": f"2026-01-01T00:00:0{stamp == 'b'}", "reps": 1, "machine": machine,
               "benchmarks": {"memory": result(with_deepspeed)}}
        report.write_run(run, tmp_path, stamp)
    markdown = report.results_markdown(report.latest_per_benchmark(tmp_path), tmp_path)
    assert "### memory\n" in markdown and "### memory (with DeepSpeed)\n" in markdown
