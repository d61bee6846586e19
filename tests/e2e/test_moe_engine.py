"""MoE through the engine: ep_size 2 on 2 ranks trains like the same model with all experts in one process (clipping
counts each expert once), its checkpoint keys experts by global index, and what it cannot do yet is refused."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.worker_output import marked_by_rank

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).parent / "moe_engine_worker.py"


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", str(WORKER), *args],
                          capture_output=True, text=True, timeout=300)


def test_expert_parallel_training_equals_all_experts_in_one_process(tmp_path):
    result = launch("train", str(tmp_path / "ckpt"))
    assert result.returncode == 0, result.stderr[-3000:]
    found = marked_by_rank(result.stdout, "MOEENGINE")
    for rank, numbers in found.items():
        assert numbers["loss_diff"] <= 1e-6 and numbers["weight_diff"] <= 1e-6, (rank, numbers)
    assert found[0]["load"] <= 1e-6  # consolidated at ep_size 2, loaded into the ep_size 1 model


def test_zero_stage_1_with_expert_parallelism_is_refused():
    result = launch("refuse", "unused")
    assert result.returncode == 2
    assert "MoE layers with ep_size > 1 train at ZeRO stage 0" in result.stdout + result.stderr
