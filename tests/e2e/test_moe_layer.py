"""MoE with expert parallelism under dsrun, 2 ranks on gloo: at ep_size 2 (tokens exchanged with all_to_all) and at
ep_size 1, every rank's output, l_aux, exp_counts and gradients equal a reference holding all experts in one process;
expert gradients averaged with `allreduce_expert_gradients` equal the reference's average over both ranks' tokens
(the same value at both ep sizes); mistakes end the job with one line."""

import subprocess

import pytest

from tests.e2e.worker_output import launch_worker, results_by_rank

pytestmark = pytest.mark.e2e

TOLERANCE = 1e-5


def launch(*args: str) -> subprocess.CompletedProcess:
    return launch_worker("moe_layer_worker.py", *args)


@pytest.fixture(scope="module")
def compared() -> dict:
    return results_by_rank("moe_layer_worker.py", "MOE", "compare")


CASES = ["top1", "top1-earliest", "top1-rsample", "top1-no-drops-jitter", "top2", "top2-no-drops-6-experts",
         "residual"]


@pytest.mark.parametrize("ep", [2, 1])
@pytest.mark.parametrize("case", CASES)
def test_expert_parallel_layer_equals_one_process_holding_all_experts(compared, case, ep):
    for rank, cases in compared.items():
        result = cases[f"{case}@ep{ep}"]
        for key in ("output", "l_aux", "input_grad", "dense_grads", "expert_raw", "expert_averaged"):
            assert result[key] <= TOLERANCE, (rank, key, result)
        assert result["counts_equal"], (rank, result)


def test_each_rank_holds_its_share_of_the_experts(compared):
    assert compared[0]["top1@ep2"]["experts"] == [0, 1] and compared[1]["top1@ep2"]["experts"] == [2, 3]
    assert compared[1]["top2-no-drops-6-experts@ep2"]["experts"] == [3, 4, 5]
    assert compared[0]["top1@ep1"]["experts"] == compared[1]["top1@ep1"]["experts"] == [0, 1, 2, 3]


def test_the_cases_drop_tokens_and_count_experts_per_rank(compared):
    # capacity 4 for 16 tokens over 4 experts: some expert is routed more on some rank, so tokens were dropped
    assert any(max(cases["top1@ep2"]["counts"]) > 4 for cases in compared.values())
    assert compared[0]["top1@ep2"]["counts"] != compared[1]["top1@ep2"]["counts"]  # each rank counts its own
    assert all(sum(cases["top2@ep2"]["counts"]) == 2 * 16 for cases in compared.values())


@pytest.mark.parametrize(("mode", "message"), [
    ("experts", "MoE num_experts=3 is not divisible by ep_size=2"),
    ("world", "MoE ep_size=4 does not divide the world size 2"),
    ("k", "MoE k=4: DeepSpeed's MoE layer gates top-1 or top-2"),
    ("tokens", "MoE: 4 tokens reach the layer, fewer than min_capacity=8"),
])  # fmt: skip
def test_mistakes_end_with_one_line(mode, message):
    result = launch("error", mode)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if "dsrun: error:" in line]
    assert lines and message in lines[0], (lines, result.stderr[-1500:])
    assert "Traceback" not in result.stdout + result.stderr
