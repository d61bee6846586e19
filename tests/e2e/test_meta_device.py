"""Models built on the meta device are materialised (after sharding, at stage 3) and train."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dsrun.errors import UsageError
from dsrun.runtime.materialize import check_initialisable
from tests.e2e.worker_output import marked

WORKER = str(Path(__file__).with_name("meta_worker.py"))


@pytest.mark.e2e
def test_meta_models_train_at_every_stage():
    result = subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", WORKER],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = marked(result.stdout, "RESULTS")
    assert set(results) == {"0", "1", "2", "3"}
    for stage, (first, last) in results.items():
        assert last < first / 3, (stage, first, last)


def test_a_meta_module_without_reset_parameters_is_refused():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 3), Scale())
    with pytest.raises(UsageError, match=r"module 1 \(Scale\) owns tensors and has no reset_parameters"):
        check_initialisable(model)
