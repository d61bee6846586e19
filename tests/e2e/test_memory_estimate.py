"""`dsrun --dry-run --model MODULE:FACTORY`: the model is built on the meta device by `python -m dsrun.probe` in its own
process, and its size, largest layer and activations reach the plan's `memory` object; the user's mistakes in the
factory are one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NOOP = str(REPO / "examples" / "noop.py")


def dry_run(*flags):
    return subprocess.run([sys.executable, "-m", "dsrun", "--dry-run", *flags, NOOP], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_model_factory_is_probed_on_the_meta_device():
    done = dry_run("--json", "--num_gpus", "2", "--model", "tests.e2e.tiny_models:mlp", "--model-input", "4x32")
    assert done.returncode == 0, done.stderr
    memory = json.loads(done.stdout)["memory"]
    assert memory["parameters"] == 6792 and memory["parameters_from"] == "--model"
    assert memory["largest_layer"] == {"name": "2", "parameters": 4160, "bytes": 4 * 4160}
    # Saved for the backward, each storage once: the input (4x32 fp32, for the first weight's gradient) and the two
    # ReLU outputs (4x64 each), which the next Linear saves too; and the output (4x8), alive until the loss is used.
    assert memory["activations"] == {"input": "4x32", "without_checkpointing": 4 * (4 * 32 + 2 * 4 * 64 + 4 * 8),
                                     "with_checkpointing": memory["activations"]["with_checkpointing"]}
    assert memory["activations"]["with_checkpointing"] <= memory["activations"]["without_checkpointing"]
    assert memory["model_state"]["total"] == 16 * 6792  # no config: stage 0, fp32, Adam


def test_a_failing_factory_is_one_line_through_the_launcher():
    done = dry_run("--model", "tests.e2e.tiny_models:broken")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "dsrun: error: --model 'tests.e2e.tiny_models:broken': the factory raised ValueError: no such width"]


@pytest.mark.parametrize("factory,message", [
    ("not_a_module", "the factory returned a dict, not a torch.nn.Module"),
    ("missing", "has no function missing"),
])
def test_probe_refuses_what_is_not_a_model_factory(capsys, factory, message):
    from dsrun.probe.__main__ import main

    assert main([f"tests.e2e.tiny_models:{factory}"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_meta_estimate_equals_the_same_count_on_real_tensors():
    """Shapes alone must give what a real forward saves, attention included (the meta device would otherwise take
    SDPA's math path, which saves the attention weights the flash kernel of a real run does not)."""
    import torch

    from bench.models import GPT, GPTConfig
    from dsrun.probe.activations import saved_bytes
    from dsrun.runtime.strategies.fully_sharded import block_runs

    cfg = GPTConfig(vocab=64, context=32, width=32, heads=2, layers=2)
    counts = []
    for device in ("meta", "cpu"):
        with torch.device(device):
            model = GPT(cfg)
            tokens = torch.zeros(4, cfg.context, dtype=torch.long)
        counts.append(saved_bytes(model, (tokens,), [b for run in block_runs(model) for b in run]))
    assert counts[0] == counts[1]
    assert counts[0]["checkpointed_bytes"] < counts[0]["saved_bytes"]
