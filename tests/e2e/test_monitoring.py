"""A real 2-rank run of the example under dsrun with csv_monitor and tensorboard: what lands in the run directory."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STEPS = 6
CONFIG = {
    "train_micro_batch_size_per_gpu": 8,
    "gradient_accumulation_steps": 2,
    "train_batch_size": "auto",
    "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
    "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 3, "warmup_max_lr": 0.01}},
    "wall_clock_breakdown": True,
    # Relative paths: from rank 0's working directory, as in DeepSpeed; both sections share one run directory.
    "csv_monitor": {"enabled": True, "output_path": "runs", "job_name": "mlp"},
    "tensorboard": {"enabled": True, "output_path": "runs", "job_name": "mlp"},
}


def test_two_rank_run_leaves_csv_events_summary_config_and_curves(tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps(CONFIG))
    result = subprocess.run(
        [sys.executable, "-m", "dsrun", "--num_gpus", "2", str(REPO / "examples" / "train.py"),
         "--deepspeed_config", "ds.json", "--steps", str(STEPS)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "mlp"
    assert result.stderr.count(f"run record in {run_dir}") == 1  # rank 0 only

    with open(run_dir / "training_metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert [int(r["samples"]) for r in rows] == [32 * n for n in range(1, STEPS + 1)]  # 8 × 2 × 2 ranks a step
    assert all(math.isfinite(float(r["loss"])) and float(r["grad_norm"]) > 0 for r in rows)
    assert float(rows[0]["lr"]) < float(rows[2]["lr"]) == 0.01  # the warm-up reaches its peak at step 3
    assert all(float(r["forward_ms"]) > 0 and float(r["optimizer_ms"]) > 0 for r in rows)

    events = EventAccumulator(str(run_dir))
    events.Reload()
    losses = events.Scalars("Train/Samples/train_loss")
    assert [e.step for e in losses] == [32 * n for n in range(1, STEPS + 1)]
    assert math.isclose(losses[-1].value, float(rows[-1]["loss"]), rel_tol=1e-6)
    assert len(events.Scalars("Train/Steps/elapsed_time_ms_backward")) == STEPS

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["samples"] == 32 * STEPS and summary["world_size"] == 2
    assert summary["final_loss"] == float(rows[-1]["loss"])
    assert summary["best_loss"] == min(float(r["loss"]) for r in rows)
    assert summary["ended_by"] == "exit" and summary["samples_per_sec"] > 0 and summary["peak_memory_bytes"] > 0
    snapshot = json.loads((run_dir / "config_resolved.json").read_text())
    assert snapshot["train_batch_size"] == 32 and snapshot["csv_monitor"] == CONFIG["csv_monitor"]
    assert (run_dir / "training_curves.png").read_bytes().startswith(b"\x89PNG")
