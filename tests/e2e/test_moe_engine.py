"""MoE through the engine: ep_size 2 on 2 ranks trains like the same model with all experts in one process (clipping
counts each expert once) at every ZeRO stage, and its checkpoint keys experts by global index."""

import subprocess

import pytest

from tests.e2e.worker_output import launch_worker, results_by_rank

pytestmark = pytest.mark.e2e


def launch(ranks: int, *args: str) -> subprocess.CompletedProcess:
    return launch_worker("moe_engine_worker.py", *args, ranks=ranks)


@pytest.mark.parametrize(("ranks", "stage", "options"), [
    (2, 0, ()), (4, 1, ()), (4, 2, ("gas=2",)), (2, 3, ()), (4, 3, ()),
])  # fmt: skip
def test_expert_parallel_training_equals_all_experts_in_one_process(tmp_path, ranks, stage, options):
    """ep_size 2: on 2 ranks each expert lives on one rank; on 4, each on two, which share its rows at stages 1-2
    and its FSDP2 unit at stage 3. (2 ranks at stage 1 runs in the reload test.)"""
    found = results_by_rank("moe_engine_worker.py", "MOEENGINE", "train", str(tmp_path), str(stage), *options,
                            ranks=ranks)
    for rank, numbers in found.items():
        assert numbers["loss_diff"] <= 1e-6 and numbers["weight_diff"] <= 1e-6, (rank, numbers)
    assert found[0]["load"] <= 1e-6  # consolidated at ep_size 2, loaded into the ep_size 1 model
    expected_share = 0.5 if ranks == 4 and stage > 0 else 1.0  # an expert's Adam state, over its copies
    assert {numbers["state_share"] for numbers in found.values()} == {expected_share}


@pytest.mark.parametrize(("ranks", "stage", "options", "bound"), [
    pytest.param(4, 1, ("bf16", "gas=2"), 3e-2, id="4-z1-bf16-accumulation"),  # the reference stays fp32
    pytest.param(2, 3, ("fp16",), 1e-3, id="2-z3-fp16"),
])  # fmt: skip
def test_expert_parallelism_in_half_precision_follows_fp32(tmp_path, ranks, stage, options, bound):
    found = results_by_rank("moe_engine_worker.py", "MOEENGINE", "train", str(tmp_path), str(stage), *options,
                            ranks=ranks)
    for rank, numbers in found.items():
        assert numbers["loss_diff"] <= bound and numbers["weight_diff"] <= bound, (rank, numbers)


@pytest.mark.parametrize(("saved", "loaded"), [
    pytest.param((2, 1), (4, 1, 4), id="ep2-z1-world2-to-ep4-z1-world4"),
    pytest.param((4, 3), (2, 0, 1), id="ep2-z3-world4-to-ep1-z0-world2"),
])  # fmt: skip
def test_a_checkpoint_loads_at_another_expert_parallel_size(tmp_path, saved, loaded):
    """Saved at ep_size 2, loaded at ep_size 4 (each rank one expert) and 1 (every rank all four), at other world
    sizes and stages: the loaded weights are the saved ones, and the next steps (which need every expert's Adam
    state) follow the reference."""
    (ranks, stage), (new_ranks, new_stage, ep_size) = saved, loaded
    assert launch(ranks, "train", str(tmp_path), str(stage)).returncode == 0
    found = results_by_rank("moe_engine_worker.py", "MOEENGINE", "reload", str(tmp_path), str(new_stage),
                            str(ep_size), ranks=new_ranks)
    for rank, numbers in found.items():
        assert numbers["loaded_diff"] <= 1e-7 and numbers["global_steps"] == 4 + 2, (rank, numbers)
        assert numbers["loss_diff"] <= 1e-6 and numbers["weight_diff"] <= 1e-6, (rank, numbers)
