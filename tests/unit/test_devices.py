import pytest

from dsrun.errors import UsageError
from dsrun.launcher.plan import devices


def test_user_visible_devices_define_the_pool():
    found = devices.detect("auto", {"CUDA_VISIBLE_DEVICES": "2,3"})
    assert found.kind == "cuda" and found.backend == "nccl"
    assert sorted(found.tokens) == [2, 3]
    assert found.visible_devices([3]) == "3"


def test_uuid_visible_devices_map_positions_to_tokens():
    found = devices.detect("auto", {"CUDA_VISIBLE_DEVICES": "GPU-aaa,GPU-bbb"})
    assert found.tokens == {0: "GPU-aaa", 1: "GPU-bbb"}
    assert found.visible_devices([1]) == "GPU-bbb"


@pytest.mark.parametrize("value", ["", "-1"])
def test_hidden_gpus_mean_cpu(value):
    assert devices.detect("auto", {"CUDA_VISIBLE_DEVICES": value}).kind == "cpu"
    with pytest.raises(UsageError, match="hides every GPU"):
        devices.detect("cuda", {"CUDA_VISIBLE_DEVICES": value})


def test_duplicate_visible_device():
    with pytest.raises(UsageError, match="twice"):
        devices.detect("auto", {"CUDA_VISIBLE_DEVICES": "1,1"})


def test_cpu_forced_even_with_visible_devices():
    found = devices.detect("cpu", {"CUDA_VISIBLE_DEVICES": "0,1"})
    assert found.kind == "cpu" and found.backend == "gloo"


def test_driver_count(monkeypatch):
    monkeypatch.setattr(devices, "_count_gpus", lambda: 4)
    found = devices.detect("auto", {})
    assert found.kind == "cuda" and sorted(found.tokens) == [0, 1, 2, 3]


def test_no_gpu(monkeypatch):
    monkeypatch.setattr(devices, "_count_gpus", lambda: 0)
    assert devices.detect("auto", {}).kind == "cpu"
    with pytest.raises(UsageError, match="no NVIDIA GPU"):
        devices.detect("cuda", {})


def test_bad_device_flag():
    with pytest.raises(UsageError, match="--device must be one of"):
        devices.detect("tpu", {})
