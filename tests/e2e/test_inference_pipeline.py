"""A model trained as a 2-stage PipelineModule (a tied first/last layer) and saved is served by init_inference from
its checkpoint, in a fresh launch, into the same layers built as a plain nn.Sequential: at tp_size 1 and at tp_size 2
(tp_plan naming the blocks' linear layers), built with weights or on the meta device (each rank then reads only its
part), it gives the trained pipeline's outputs. The tied layer's bias is each stage's own: a Sequential making the
layer one module (one bias) is refused, not served with one stage's bias at both indices."""

import pytest

from tests.e2e.worker_output import launch_worker, results_by_rank

pytestmark = pytest.mark.e2e

TOLERANCE = 1e-5
ENGINES = [f"tp{tp}_{built}" for tp in (1, 2) for built in ("cpu_tie_weight", "meta_tie_weight", "meta_tie_none")]
ENGINES.append("tp2_meta_tie_weight_from_file")  # the checkpoint consolidated into a .pt


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("pipeline_served")
    trained = launch_worker("inference_pipeline_worker.py", "train", str(workdir))
    assert trained.returncode == 0, trained.stderr[-3000:]
    return results_by_rank("inference_pipeline_worker.py", "PIPESERVE", "serve", str(workdir))


@pytest.mark.parametrize("engine", ENGINES)
def test_the_served_sequential_gives_the_trained_pipelines_outputs(served, engine):
    for rank, results in served.items():
        # Training moved the outputs far from where they started: equal outputs mean the trained weights were read.
        assert results["moved"] > 0.1, results["moved"]
        assert results[engine]["diff"] <= TOLERANCE, (rank, engine, results[engine])


@pytest.mark.parametrize("engine", [e for e in ENGINES if e.startswith("tp2")])
def test_tp_plan_splits_both_blocks(served, engine):
    assert all(results[engine]["row_split"] == 2 for results in served.values()), served


@pytest.mark.parametrize("engine", ["tp2_meta_tie_weight", "tp2_meta_tie_none", "tp2_meta_tie_weight_from_file"])
def test_a_meta_model_reads_only_its_part_of_the_pipeline_checkpoint(served, engine):
    assert all(results[engine]["whole_reads"] == 0 for results in served.values()), served


def test_a_sequential_tying_the_whole_layer_is_refused(served):
    for results in served.values():
        assert len(results["refused"]) == 3
        for message in results["refused"]:
            assert "holds different values for 0.bias and 4.bias" in message, message
