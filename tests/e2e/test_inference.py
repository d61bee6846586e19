"""init_inference under dsrun, 2 ranks on gloo: a tiny GPT-2 (fused qkv Conv1D) and a tiny Llama (grouped-query
attention) split with tensor parallelism give the unsplit model's logits and greedy tokens, hold half of each split
weight per rank, load weights from .pt and .safetensors files and from the checkpoint of a model trained under
ZeRO-3 (into a model on the meta device too, each rank reading its shards), and mistakes end the job with one line."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.worker_output import launch_worker, results_by_rank

pytest.importorskip("transformers")
pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
TOLERANCE = 1e-5
MODELS = ["gpt2", "llama"]


def launch(*args: str) -> subprocess.CompletedProcess:
    return launch_worker("inference_worker.py", *args)


@pytest.fixture(scope="module")
def compared() -> dict:
    return results_by_rank("inference_worker.py", "INFER", "compare")


@pytest.mark.parametrize("model", MODELS)
def test_tp2_logits_equal_the_unsplit_model(compared, model):
    for rank, results in compared.items():
        assert results[model]["logits"] <= TOLERANCE, (rank, results[model]["logits"])


@pytest.mark.parametrize("model", MODELS)
def test_greedy_generate_gives_the_unsplit_models_tokens_on_every_rank(compared, model):
    tokens = [results[model]["tokens"] for results in compared.values()]
    assert tokens[0] == tokens[1] == compared[0][model]["reference_tokens"]
    assert len(tokens[0][0]) == 10 + 12  # the prompt and 12 new tokens


@pytest.mark.parametrize("model", MODELS)
def test_sampling_draws_the_same_tokens_on_every_rank(compared, model):
    assert compared[0][model]["sampled"] == compared[1][model]["sampled"]


def test_the_example_prints_the_same_tokens_under_dsrun_torchrun_and_python():
    example = str(HERE.parent.parent / "examples" / "infer.py")
    runs = {
        "dsrun": [sys.executable, "-m", "dsrun", "--num_gpus", "2", example],
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", example],
        "python": [sys.executable, example],
    }
    printed = {}
    for name, command in runs.items():
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (name, result.stderr[-2000:])
        lines = result.stdout.splitlines()
        printed[name] = [line.split("next token:", 1)[1] for line in lines if "next token:" in line]
    assert len(printed["python"]) == 1 and printed["dsrun"] == printed["torchrun"] == printed["python"], printed


@pytest.mark.parametrize("model", MODELS)
def test_each_rank_holds_half_of_every_split_weight(compared, model):
    for results in compared.values():
        held = results[model]["bytes"]
        # 2 layers x (GPT-2: the weights of c_attn, attn c_proj, c_fc, mlp c_proj and the biases of c_attn, c_fc)
        # or (Llama: the weights of q, k, v, o, gate, up, down)
        assert held["tensors"] == {"gpt2": 12, "llama": 14}[model], held
        assert held["mine"] * 2 == held["whole"], held
        # only the row-wise layers' biases stay whole (2 layers x 2 x 32 floats in GPT-2; Llama has no biases)
        assert held["replicated"] == {"gpt2": 2 * 2 * 32 * 4, "llama": 0}[model], held


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("source", ["pt", "safetensors"])
def test_weights_load_from_a_consolidated_file(compared, model, source):
    for results in compared.values():
        assert results[model][f"logits_from_{source}"] <= TOLERANCE


@pytest.mark.parametrize("model", MODELS)
def test_a_model_trained_under_zero3_is_served_from_its_checkpoint(tmp_path, model):
    found = results_by_rank("inference_worker.py", "INFER", "trained", model, str(tmp_path / "saved"))
    for rank, served in found.items():
        assert served["logits"] <= TOLERANCE, (rank, served)
        assert served["moved"] > 100 * TOLERANCE  # training changed the outputs: the trained weights were served
        # built on the meta device: each rank allocated and read only its half of every split weight
        assert served["logits_from_meta"] <= TOLERANCE, (rank, served)
        assert served["whole_reads_from_meta"] == 0, served
        assert "names the model does not have (first" in served["smaller_model"], served
        held = served["bytes_from_meta"]
        assert held["tensors"] == {"gpt2": 12, "llama": 14}[model] and held["mine"] * 2 == held["whole"], held


@pytest.mark.parametrize(("mode", "message"), [
    ("heads", "tp_size=2 does not divide the 3 attention heads of transformer.h.0.attn"),
    ("world", "tensor_parallel.tp_size=3 does not divide the world size 2"),
    ("unknown-model", "Sequential has no attention or MLP blocks dsrun recognises"),
    ("not-a-checkpoint", "is neither a dsrun checkpoint nor a save directory"),
])  # fmt: skip
def test_mistakes_end_with_one_line(mode, message):
    result = launch("error", mode)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if "dsrun: error:" in line]
    assert lines and message in lines[0], (lines, result.stderr[-1500:])
    assert "Traceback" not in result.stdout + result.stderr
