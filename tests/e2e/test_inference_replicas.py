"""init_inference on 4 ranks at tp_size 2 (tests/e2e/inference_replicas_worker.py): two replicas of the split model
serve their own inputs with rank 0's weights; a model on the meta device is filled from a consolidated .safetensors
or .pt file with each rank reading its own part; a model with a dsrun MoE layer trained at ep_size 2 is served from
its checkpoint with the dense block split and the experts whole."""

import pytest

from tests.e2e.worker_output import results_by_rank

pytest.importorskip("transformers")
pytestmark = pytest.mark.e2e

TOLERANCE = 1e-5
MODELS = ["gpt2", "llama"]


@pytest.fixture(scope="module")
def served() -> dict:
    return results_by_rank("inference_replicas_worker.py", "INFER", ranks=4)


@pytest.mark.parametrize("model", MODELS)
def test_each_replica_gives_the_unsplit_models_logits_on_its_own_input(served, model):
    for rank, results in served.items():
        assert results["replicas"][model]["logits"] <= TOLERANCE, (rank, results["replicas"][model])
        assert results["replicas"][model]["logits_tp1"] <= TOLERANCE, (rank, results["replicas"][model])
    inputs = [served[rank]["replicas"][model]["ids"] for rank in range(4)]
    assert inputs[0] == inputs[1] and inputs[2] == inputs[3] and inputs[0] != inputs[2]


@pytest.mark.parametrize("model", MODELS)
def test_each_rank_of_a_replica_holds_half_of_every_split_weight(served, model):
    for results in served.values():
        held = results["replicas"][model]["bytes"]
        assert held["tensors"] == {"gpt2": 12, "llama": 14}[model] and held["mine"] * 2 == held["whole"], held


@pytest.mark.parametrize("model", MODELS)
def test_the_ranks_of_a_replica_sample_the_same_tokens(served, model):
    sampled = [served[rank]["replicas"][model]["sampled"] for rank in range(4)]
    assert sampled[0] == sampled[1] and sampled[2] == sampled[3]


@pytest.mark.parametrize("model", [*MODELS, "big"])
@pytest.mark.parametrize("source", ["safetensors", "pt"])
def test_a_meta_model_loads_its_own_part_of_a_consolidated_file(served, model, source):
    for rank, results in served.items():
        loaded = results["files"][f"{model}_{source}"]
        assert loaded["logits"] <= TOLERANCE and loaded["halves"], (rank, loaded)


@pytest.mark.parametrize("source", ["safetensors", "pt"])
def test_no_rank_reads_or_holds_the_whole_model_from_a_file(served, source):
    for rank, results in served.items():
        loaded = results["files"][f"big_{source}"]
        # Its own memory: half of the split layers (97% of the model) plus the whole small ones, at most.
        assert loaded["own_peak"] <= 0.6, (rank, loaded)
        # The pages of the file it mapped in: half of each split weight, rounded out to the pages (and the kernel's
        # fault-around of up to 64 KiB) each row-wise layer's half rows start and end in; a whole read is 1.0.
        assert loaded["touched"] <= 0.85, (rank, loaded)


def test_a_model_with_moe_layers_trained_at_ep2_is_served_at_tp2(served):
    for rank, results in served.items():
        moe = results["moe"]
        assert moe["logits"] <= TOLERANCE and moe["logits_from_meta"] <= TOLERANCE, (rank, moe)
        assert moe["moved"] > 100 * TOLERANCE  # training changed the outputs: the trained weights were served
        # the dense MLP block is split; the experts (named like an MLP block too) stay whole, all 4 on every rank
        assert moe["split"] == ["mlp.down_proj.weight", "mlp.up_proj.bias", "mlp.up_proj.weight"], moe
        assert moe["expert_bytes"] == moe["all_expert_bytes"] > 0, moe
