"""Per-rank model-state memory of each ZeRO stage stays within its ZeRO formula, and the dry run's estimate
(dsrun/launcher/memory/model_state.py) equals it within 5%, with and without offload (2 ranks, AdamW)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.worker_output import marked

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("memory_worker.py"))
N = 2
# Bytes per parameter: fp32 Adam (4 param + 4 grad + 8 state) and mixed precision (2 + 2 + 12), partitioned per stage.
FORMULA = {
    "fp32": {0: 16, 1: 8 + 8 / N, 2: 4 + 12 / N, 3: 16 / N},
    "bf16": {0: 16, 1: 4 + 12 / N, 2: 2 + 14 / N, 3: 16 / N},
}
# Half-precision gradients are converted to fp32 for the optimizer 1/16 at a time: 4/16 bytes per parameter.
ALLOWANCE = {"fp32": 0.0, "bf16": 4 / 16}
ESTIMATE_TOLERANCE = 0.05


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_model_state_within_formula(precision):
    result = subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", str(N), "--no_local_rank", WORKER, precision],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = marked(result.stdout, "RESULTS")
    for key, entry in measured.items():  # every stage, and stages 1-3 with offload_optimizer
        held, predicted = entry["measured"]["total"], entry["estimate"]["total"]
        assert abs(held / predicted - 1) <= ESTIMATE_TOLERANCE, (
            f"stage {key} {precision}: the engine holds {held:.3f} B/param, the estimate"
            f" ({entry['estimate']['formula']}) says {predicted:.3f}")
    for stage, formula in FORMULA[precision].items():
        total = measured[str(stage)]["measured"]["total"]
        assert total <= formula + ALLOWANCE[precision] + 1e-9, f"stage {stage}: {total:.3f} > {formula} B/param"
        assert total >= formula * 0.9, f"stage {stage}: {total:.3f} B/param is implausibly low (miscounted?)"
