"""What real DeepSpeed scripts do beyond the plain engine loop (DeepSpeedExamples' GAN and CIFAR): a forward through
the bare module, ranks built with different weights, BatchNorm statistics, unused parameters."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.worker_output import marked

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
TOLERANCE = 1e-5


def launch(worker: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", str(HERE / worker),
                           *args], capture_output=True, text=True, timeout=300)


def test_bare_module_forward_rank0_start_and_local_buffers():
    result = launch("script_compat_worker.py")
    assert result.returncode == 0, result.stderr[-3000:]
    found = marked(result.stdout, "RESULTS")
    for stage in range(4):
        for accumulation in (1, 2):  # gradients averaged over ranks although the engine's forward never ran
            assert found[f"bare z{stage} a{accumulation}"] <= TOLERANCE, found
        # The script's own loss.backward() (forward through the engine) is averaged at engine.step().
        assert found[f"own backward z{stage}"] <= TOLERANCE, found
        # A gradient left by a backward outside the engine is cleared by zero_grad, not added to the next step.
        assert found[f"stale z{stage} fp32"] <= TOLERANCE and found[f"stale z{stage} bf16"] <= 1e-2, found
        for variant in ("plain", "meta", "client optimizer"):  # every rank starts from rank 0's weights
            assert found[f"start z{stage} {variant}"] == 0.0, (stage, variant, found)
    assert found["buffers local"] is True
    # A second initialize() on a stage-3 model trains on; other settings than the first engine's stop with exit 2.
    assert found["reinitialize z3"] == {"again": True, "other settings": 2}


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_ignore_unused_parameters_false_refuses_an_unused_parameter(stage):
    result = launch("unused_params_worker.py", "strict", str(stage))
    assert result.returncode != 0
    assert "zero_optimization.ignore_unused_parameters is false" in result.stderr, result.stderr[-2000:]
    assert "b.weight" in result.stderr or "a.weight" in result.stderr
