"""A DeepSpeed-style script runs the same under dsrun, under torchrun, and as a plain single process."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARGS = ["examples/train.py", "--deepspeed_config", "examples/ds_config.json", "--steps", "5"]


def check(result, world: int) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"done: 5 steps, {5 * 32 * world} samples, train_batch_size {32 * world}", result.stdout)
    assert re.search(r"step 5 loss [\d.]+", result.stderr)


def test_plain_python_is_a_world_of_one():
    check(subprocess.run([sys.executable, *ARGS], cwd=REPO, capture_output=True, text=True, timeout=120), 1)


def test_under_torchrun():
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    check(subprocess.run([*torchrun, *ARGS], cwd=REPO, capture_output=True, text=True, timeout=180), 2)
