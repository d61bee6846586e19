"""ZeRO stages 0-3 × world size 1 and 2 × accumulation 1 and 2 train exactly like a plain PyTorch loop (fp32), also
with stage 3's blocks in several units and with DeepSpeed's gradient pre-division; sums in bf16 train nearly so."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.equivalence_worker import VARIANTS
from tests.e2e.worker_output import marked

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("equivalence_worker.py"))
TOLERANCE = 1e-5
NORM_TOLERANCE = 1e-5  # relative
BF16_SUM_TOLERANCE = 1e-2


def run_world(world: int, clip: float) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "dsrun", "--num_gpus", str(world), "--no_local_rank", WORKER, str(clip)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return marked(result.stdout, "RESULTS")


@pytest.mark.parametrize(("world", "clip"), [(1, 0.0), (2, 0.0), (2, 0.05)])
def test_every_stage_matches_the_plain_loop(world, clip):
    results = run_world(world, clip)
    assert {(r["variant"], r["accumulation"]) for r in results} == {(v[0], a) for v in VARIANTS for a in (1, 2)}
    for r in results:
        assert r["world"] == world
        worst = max(abs(a - b) for a, b in zip(r["losses"], r["reference"], strict=True))
        norm_error = max(abs(a / b - 1) for a, b in zip(r["norms"], r["reference_norms"], strict=True))
        name = f"{r['variant']} accumulation {r['accumulation']}: loss {worst}, gradient norm {norm_error}"
        if "bf16 sum" in r["variant"]:
            # Gradients summed in bf16 (8 bits of mantissa) train a little differently, but still train.
            assert worst <= BF16_SUM_TOLERANCE and norm_error <= BF16_SUM_TOLERANCE, name
            if world > 1 or r["variant"] != "z0 bf16 sum":  # world 1 at stage 0 has no sum
                assert worst > TOLERANCE, f"no bf16 rounding: {name}"
        else:
            assert worst <= TOLERANCE and norm_error <= NORM_TOLERANCE, name
    if clip:
        # with a tiny clip every update is clipped, so a broken clip would already have failed the comparison
        assert all(min(r["norms"]) > clip for r in results)


def test_ranks_using_different_branches_still_average_exactly():
    """A parameter unused on one rank (DeepSpeed's ignore_unused_parameters default) neither fails (stages 0-1)
    nor pairs up different collectives across ranks (stage 2, and stage 3 where FSDP2 zero-fills it)."""
    worker = str(Path(__file__).with_name("unused_params_worker.py"))
    result = subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", worker],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    diffs = marked(result.stdout, "RESULTS")
    assert all(diffs[stage] <= TOLERANCE for stage in ("0", "1", "2", "3")), diffs
    assert "ZeRO stage 3: ranks ran different blocks" in diffs["3 skipping"], diffs["3 skipping"]
