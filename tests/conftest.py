import pytest

from dsrun.launcher import devices


@pytest.fixture(autouse=True)
def no_local_gpus(monkeypatch):
    """Tests decide what hardware the launcher sees; the test machine's own GPUs (if any) must not leak in."""
    monkeypatch.setattr(devices, "_count_gpus", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
