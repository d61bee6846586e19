"""Smoke test of the benchmark harness: a --quick run writes one complete JSON and a results table.

It checks the harness works, not how fast anything is: timings are never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert not list(out.glob("*.tmp"))
