"""Pipeline checkpoints are keyed by layer index: saved with 2 stages, they load with 1 stage and 2 replicas or with
2 stages and 2 replicas and training goes on exactly as it would have; `dsrun consolidate` exports the layer list."""

from pathlib import Path

import pytest
import torch
from torch import nn

from dsrun.runtime.checkpoint.consolidate import consolidate
from tests.e2e.worker_output import results_by_rank

pytestmark = pytest.mark.e2e


def run(ranks: int, mode: str, directory: Path, stages: int) -> dict:
    found = results_by_rank("pipeline_checkpoint_worker.py", "CKPT", mode, str(directory), str(stages), ranks=ranks)
    assert all(r == found[0] for r in found.values()), found
    return found[0]


def test_a_pipeline_checkpoint_loads_with_other_stages_and_replicas(tmp_path):
    saved = run(2, "save", tmp_path / "ckpt", 2)
    assert run(2, "load", tmp_path / "ckpt", 2) == saved  # the same layout: the same floats, an exact resume
    for ranks, stages in ((2, 1), (4, 2)):
        loaded = run(ranks, "load", tmp_path / "ckpt", stages)
        # Another layout sums the replicas' gradients in another order: equal up to float rounding.
        assert loaded["steps"] == saved["steps"] and abs(loaded["eval"] - saved["eval"]) <= 1e-6, (ranks, stages)
        assert max(abs(a - b) for a, b in zip(loaded["losses"], saved["losses"], strict=True)) <= 1e-6, loaded

    out = tmp_path / "weights.pt"
    consolidate(tmp_path / "ckpt", out)
    shared = nn.Linear(6, 6, bias=False)
    model = nn.Sequential(shared, nn.Tanh(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), shared)
    model.load_state_dict(torch.load(out)["module"])
    g = torch.Generator().manual_seed(500 + 99)
    x, y = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    with torch.no_grad():
        assert abs(nn.functional.mse_loss(model(x), y).item() - saved["eval"]) <= 1e-6
