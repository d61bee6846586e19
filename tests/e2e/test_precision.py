"""bf16 and fp16 train at every ZeRO stage; an fp16 overflow on one rank skips the update on every rank."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.worker_output import marked_by_rank

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("precision_worker.py"))


def run(*args) -> dict[int, list]:
    result = subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", WORKER, *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return marked_by_rank(result.stdout, "RESULTS")


def test_half_precision_trains_at_every_stage():
    results = run("train")[0]
    assert {(r["precision"], r["stage"]) for r in results} == {(p, s) for p in ("bf16", "fp16") for s in range(4)}
    for r in results:
        assert all(math.isfinite(v) for v in r["losses"]), r
        assert sum(r["losses"][-3:]) < sum(r["losses"][:3]) / 2, r  # it learns
        # fp16 starts at scale 2^16, which overflows half-precision gradients until it has backed off a little
        assert r["skipped"] == 0 if r["precision"] == "bf16" else r["skipped"] <= 3, r


def test_two_ranks_sum_bf16_gradients_in_bf16_with_the_same_bits_as_in_fp32():
    """At stages 0-1 with 2 ranks dsrun sums bf16 gradients in bf16 (half the bytes): each element is rounded once
    either way, so weights and norms must match the fp32 sum exactly. Stage 2 adds each micro-step's sum to its
    shards, where a bf16 sum does differ: the ranks' gradients here are different enough to show it."""
    runs = run("sums")[0]
    for stage in (0, 1):
        assert runs[f"z{stage} default"] == runs[f"z{stage} fp32"], stage
    assert runs["z2 bf16"]["weights"] != runs["z2 fp32"]["weights"]


@pytest.mark.parametrize("stage", [0, 2])
def test_overflow_on_one_rank_skips_the_step_on_all_ranks(stage):
    per_rank = run("overflow", str(stage))
    assert per_rank[0] == per_rank[1]  # both ranks made the same decisions
    steps = per_rank[0]
    assert [s["applied"] for s in steps] == [True, False, True, True]
    assert [s["skipped"] for s in steps] == [0, 1, 1, 1]
    assert [s["global_steps"] for s in steps] == [1, 2, 3, 4]  # a skipped step still counts, as in DeepSpeed
    assert steps[1]["scale"] == steps[0]["scale"] / 2  # hysteresis 1: the first overflow halves the scale
    assert steps[1]["lr"] == steps[0]["lr"]  # the schedule did not advance on the skipped step
    assert steps[2]["lr"] > steps[1]["lr"]
