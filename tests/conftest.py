import os

import pytest
import torch.distributed as dist

from dsrun.launcher.plan import devices


@pytest.fixture(autouse=True)
def no_local_gpus(monkeypatch):
    """Tests decide what hardware the launcher sees; the test machine's own GPUs (if any) must not leak in."""
    monkeypatch.setattr(devices, "_count_gpus", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.fixture
def single_process(monkeypatch):
    """dsrun.initialize in this process as a world of one; the process group and env are undone afterwards."""
    saved_env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved_env)
