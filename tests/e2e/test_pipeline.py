"""Pipeline parallelism under dsrun: a PipelineModule trained over 2 stages (1 and 2 replicas each) matches the same
layers trained as one module on the whole batch; tied copies stay equal; mistakes end the job with one line."""

import csv
import subprocess

import pytest

from tests.e2e.worker_output import launch_worker, results_by_rank

pytestmark = pytest.mark.e2e


def launch(ranks: int, worker: str, *args: str) -> subprocess.CompletedProcess:
    return launch_worker(worker, *args, ranks=ranks)


def results(ranks: int, *args: str) -> dict:
    found = results_by_rank("pipeline_worker.py", "PIPE", *args, ranks=ranks)
    assert len({tuple(r["losses"]) for r in found.values()}) == 1, "every rank returns the same loss"
    return found


@pytest.mark.parametrize(("ranks", "args"), [
    pytest.param(2, ("2",), id="2x1"),  # 2 stages, 1F1B over 4 micro-batches
    pytest.param(2, ("2", "tied", "gpipe"), id="2x1-tied-gpipe"),  # a weight shared by the first and last stage
    pytest.param(4, ("2", "tied", "zero1"), id="2x2-tied-zero1"),  # 2 stages x 2 replicas, ZeRO-1 in each stage
    pytest.param(2, ("1", "gas=2"), id="1x2"),  # one stage, 2 replicas
])  # fmt: skip
def test_pipeline_trains_like_one_module(ranks, args):
    found = results(ranks, *args)
    for rank, result in found.items():
        assert result["loss_diff"] <= 1e-5 and result["weight_diff"] <= 1e-5, (rank, result)
        assert result["eval_diff"] <= 1e-5, (rank, result)
        if result["logits_diff"] is not None:
            assert result["logits_diff"] <= 1e-5, (rank, result)
        if args[0] != "1":  # gradient_accumulation_steps 4 >= 2 stages: 1F1B unless the config asks for GPipe
            expected = "ScheduleGPipe" if "gpipe" in args else "Schedule1F1B"
            assert set(result["schedules"]) == {expected}, result["schedules"]
    stages = {result["stage"] for result in found.values()}
    assert stages == set(range(int(args[0])))
    if "tied" in args:
        copies = [result["tied"] for result in found.values()]
        assert all(copy == copies[0] for copy in copies), "tied copies differ"
        shares = sorted({result["params"] for result in found.values()})
        assert len(shares) == 2 and sum(shares) > 0  # each stage holds its own layers only


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_pipeline_follows_the_fp32_model(precision):
    for rank, result in results(2, "2", precision).items():
        assert result["loss_diff"] <= 2e-3 and result["weight_diff"] <= 0.05, (rank, result)


def test_fp16_overflow_on_one_stage_skips_the_step_on_all():
    found = results(2, "2", "fp16", "overflow")
    for rank, result in found.items():
        assert result["skipped"] == 1 and result["global_steps"] == 5, (rank, result)
        assert result["weight_diff"] <= 1e-3, (rank, result)  # the reference skipped the same step


@pytest.mark.parametrize(("mode", "message"), [
    ("three stages", "PipelineModule num_stages=3 does not divide the world size 2"),
    ("tied shapes", "tied layer 'embed': the stages holding it build weight with different shapes"),
    ("zero2", "ZeRO stage 2 does not combine with pipeline parallelism"),
    ("forward", "engine.forward() is not available on a pipeline engine: call engine.train_batch()"),
    ("no data", "needs data: pass data_iter="),
    ("uneven", "a pipeline needs equal micro-batches"),
])  # fmt: skip
def test_pipeline_mistakes_end_with_one_line(mode, message):
    result = launch(2, "pipeline_errors_worker.py", mode)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if "dsrun: error:" in line]
    assert lines and message in lines[0], (lines, result.stderr[-1500:])
    assert "Traceback" not in result.stdout + result.stderr


def test_tied_copies_stay_identical_over_many_steps_and_the_csv_has_the_pipeline_loss(tmp_path):
    """2 stages x 2 replicas with a weight tied between the first and last stage, 150 steps: every rank's copy is
    the same floats, and csv_monitor's rows carry the loss train_batch returned, step by step."""
    steps = 150
    found = results(4, "2", "tied", "zero1", f"steps={steps}", f"csv={tmp_path}")
    copies = [result["tied"] for result in found.values()]
    assert all(copy == copies[0] for copy in copies), "tied copies drifted apart"
    assert all(result["global_steps"] == steps for result in found.values())
    with open(tmp_path / "pipe" / "training_metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == list(range(1, steps + 1))
    assert [float(row["loss"]) for row in rows] == found[0]["losses"]
    assert [int(row["samples"]) for row in rows] == [3 * 4 * 2 * n for n in range(1, steps + 1)]  # micro x gas x dp
    assert all(float(row["grad_norm"]) > 0 for row in rows)
