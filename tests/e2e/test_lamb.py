"""The config's Lamb trains 2 ranks at ZeRO stages 0-3 exactly like one process on the whole model: its per-tensor
norms are of whole tensors even when each rank holds a shard (and some ranks none) of a parameter, and its state
survives a checkpoint saved at one stage and loaded at another."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.worker_output import marked

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("lamb_worker.py"))
WEIGHT_TOLERANCE = 1e-6  # absolute, on weights that move by ~4e-2
COEFF_TOLERANCE = 1e-5  # relative; a shard's norm instead of the whole tensor's is off by tens of percent


def test_every_stage_matches_one_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", WORKER, str(tmp_path / "ckpt")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = marked(result.stdout, "RESULTS")
    assert set(results) == {"z0", "z1", "z2", "z3", "z1 clip", "z3 clip", "z2 saved, z3 loaded"}
    for label, r in results.items():
        assert r["moved"] > 100 * WEIGHT_TOLERANCE, f"{label}: the weights hardly moved ({r['moved']})"
        # coefficients inside the clamp bounds, so a wrong norm cannot hide behind max_coeff / min_coeff
        assert all(0.01 < c < 10.0 for c in r["last_coeffs"]), f"{label}: {r['last_coeffs']}"
        assert r["weights"] <= WEIGHT_TOLERANCE, f"{label}: weights differ by {r['weights']}"
        assert r["coeffs"] <= COEFF_TOLERANCE, f"{label}: trust ratios differ by {r['coeffs']} (relative)"
