"""dsrun.accelerator: DeepSpeed's accelerator API. The CPU accelerator runs for real; the CUDA one's logic runs
against a monkeypatched torch.cuda (no GPU needed)."""

import subprocess
import sys
from types import SimpleNamespace

import psutil
import pytest
import torch

from dsrun.accelerator import (
    AcceleratorChoiceError,
    CPUAccelerator,
    CUDAAccelerator,
    NoCustomOpError,
    get_accelerator,
    host_memory,
    is_current_accelerator_supported,
    selection,
    set_accelerator,
)
from dsrun.accelerator import cpu as cpu_module
from dsrun.errors import UsageError

# Every method and property of DeepSpeed's DeepSpeedAccelerator (accelerator/abstract_accelerator.py).
DEEPSPEED_API = """
is_synchronized_device use_host_timers resolves_data_dependency handles_memory_backpressure device_name device
set_device current_device current_device_name device_count synchronize random set_rng_state get_rng_state
manual_seed manual_seed_all initial_seed default_generator Stream stream current_stream default_stream Event
empty_cache memory_allocated max_memory_allocated reset_max_memory_allocated memory_cached max_memory_cached
reset_max_memory_cached memory_stats reset_peak_memory_stats memory_reserved max_memory_reserved total_memory
available_memory is_bf16_supported is_fp16_supported supported_dtypes amp is_available range_push range_pop lazy_call
communication_backend_name is_triton_supported create_graph capture_to_graph replay_graph BFloat16Tensor ByteTensor
DoubleTensor FloatTensor HalfTensor IntTensor LongTensor pin_memory is_pinned on_accelerator op_builder_dir
create_op_builder get_op_builder build_extension export_envs visible_devices_envs set_visible_devices_envs
get_compile_backend set_compile_backend _name
""".split()


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    """Each test chooses from its own environment; the process-wide accelerator is restored afterwards."""
    monkeypatch.setattr(selection, "_current", None)
    for var in ("DSRUN_ACCELERATOR", "DS_ACCELERATOR", "LOCAL_RANK", "LOCAL_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def cpu():
    return CPUAccelerator()


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA accelerator over a torch.cuda that claims one Ampere GPU (capability 8.0)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return CUDAAccelerator()


# --- choosing the accelerator


@pytest.mark.parametrize("env, expected", [
    ({"DSRUN_ACCELERATOR": "cpu"}, "cpu"),
    ({"DSRUN_ACCELERATOR": "cuda"}, "cuda"),  # the launcher's word, not re-checked against torch
    ({"DS_ACCELERATOR": "cpu"}, "cpu"),
    ({"DS_ACCELERATOR": " CUDA "}, "cuda"),
    ({"DSRUN_ACCELERATOR": "cpu", "DS_ACCELERATOR": "cpu"}, "cpu"),
    ({"DSRUN_ACCELERATOR": "", "DS_ACCELERATOR": "cpu"}, "cpu"),
])
def test_environment_decides(env, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: expected == "cpu")  # auto-detect would say the opposite
    assert selection.choose(env) == expected


@pytest.mark.parametrize("has_gpu, expected", [(True, "cuda"), (False, "cpu")])
def test_auto_detect_without_env(has_gpu, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_gpu)
    assert selection.choose({}) == expected
    assert selection.choose({"DS_ACCELERATOR": ""}) == expected


@pytest.mark.parametrize("var", ["DSRUN_ACCELERATOR", "DS_ACCELERATOR"])
def test_unknown_value_names_the_allowed_ones(var):
    with pytest.raises(AcceleratorChoiceError, match=rf"{var}='tpu' is unknown: allowed values are cuda or cpu"):
        selection.choose({var: "tpu"})


def test_other_deepspeed_accelerators_are_named_as_unsupported():
    with pytest.raises(ValueError, match="'xpu' is a DeepSpeed accelerator dsrun does not implement.*cuda or cpu"):
        selection.choose({"DS_ACCELERATOR": "xpu"})


def test_choice_error_is_a_usage_error():
    # A worker turns UsageErrors into one line; DeepSpeed raises ValueError for a bad DS_ACCELERATOR.
    assert issubclass(AcceleratorChoiceError, UsageError) and issubclass(AcceleratorChoiceError, ValueError)


def test_launcher_and_deepspeed_variables_must_agree():
    with pytest.raises(AcceleratorChoiceError, match=r"DS_ACCELERATOR=cpu.*DSRUN_ACCELERATOR=cuda.*--device cpu"):
        selection.choose({"DSRUN_ACCELERATOR": "cuda", "DS_ACCELERATOR": "cpu"})


def test_get_accelerator_builds_once_from_os_environ(monkeypatch):
    monkeypatch.setenv("DSRUN_ACCELERATOR", "cpu")
    first = get_accelerator()
    assert isinstance(first, CPUAccelerator) and get_accelerator() is first
    monkeypatch.setenv("DSRUN_ACCELERATOR", "cuda")
    assert get_accelerator() is first  # decided once per process, as DeepSpeed
    assert is_current_accelerator_supported()


def test_get_accelerator_for_cuda_needs_no_gpu_to_build(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    assert isinstance(get_accelerator(), CUDAAccelerator)


def test_get_accelerator_raises_on_bad_env(monkeypatch):
    monkeypatch.setenv("DSRUN_ACCELERATOR", "gpu")
    with pytest.raises(AcceleratorChoiceError, match="cuda or cpu"):
        get_accelerator()


def test_set_accelerator(monkeypatch):
    monkeypatch.setenv("DSRUN_ACCELERATOR", "cuda")
    mine = CPUAccelerator()
    set_accelerator(mine)
    assert get_accelerator() is mine
    with pytest.raises(TypeError, match="got str"):
        set_accelerator("cpu")


def test_choosing_does_not_import_torch():
    code = ("import sys; from dsrun.accelerator import get_accelerator; a = get_accelerator(); "
            "print(a.name, a.device_name(), a.communication_backend_name(), 'torch' in sys.modules)")
    env = {"DSRUN_ACCELERATOR": "cpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["cpu", "cpu", "gloo", "False"]


# --- the DeepSpeed API surface


@pytest.mark.parametrize("cls", [CPUAccelerator, CUDAAccelerator])
def test_whole_deepspeed_api_is_there(cls):
    accelerator = cls()  # an abstract method left out would fail here
    missing = [name for name in DEEPSPEED_API if not hasattr(type(accelerator), name) and name != "_name"]
    assert missing == []
    assert accelerator._name == accelerator.name == cls._name


@pytest.mark.parametrize("cls", [CPUAccelerator, CUDAAccelerator])
def test_no_custom_ops(cls):
    accelerator = cls()
    with pytest.raises(NoCustomOpError, match=r"no op builder 'FusedAdamBuilder'; use torch\.optim\.Adam"):
        accelerator.create_op_builder("FusedAdamBuilder")
    with pytest.raises(NotImplementedError, match="'SomeBuilder'; use torch's own operators"):
        accelerator.get_op_builder("SomeBuilder")
    with pytest.raises(UsageError, match="no op builder directory"):
        accelerator.op_builder_dir()


def test_compile_backend_is_checked(cpu, monkeypatch):
    # A stand-in for torch._dynamo, which takes seconds to import.
    monkeypatch.setitem(sys.modules, "torch._dynamo", SimpleNamespace(list_backends=lambda **_: ["eager"]))
    assert cpu.get_compile_backend() == "inductor"
    cpu.set_compile_backend("eager")
    assert cpu.get_compile_backend() == "eager"
    with pytest.raises(ValueError, match="'nope' is unknown on cpu; known: eager"):
        cpu.set_compile_backend("nope")


def test_visible_devices_env(cpu):
    env = {}
    cpu.set_visible_devices_envs(env, [2, 5])
    assert env == {"CUDA_VISIBLE_DEVICES": "2,5"}
    assert cpu.export_envs() == [] and CUDAAccelerator().export_envs() == ["NCCL"]


# --- CPU


def test_cpu_identity(cpu):
    assert cpu.device_name() == cpu.device_name(3) == cpu.current_device_name() == "cpu"
    assert cpu.communication_backend_name() == "gloo"
    assert cpu.is_available() and cpu.is_synchronized_device()
    assert cpu.use_host_timers() and cpu.resolves_data_dependency() and cpu.handles_memory_backpressure()
    assert torch.device(cpu.device_name(), 0).type == "cpu"  # what DeepSpeedExamples build from it


def test_cpu_device_index_and_count(cpu, monkeypatch, tmp_path):
    assert cpu.current_device() == 0
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_SIZE", "4")
    assert cpu.current_device() == 3 and cpu.device_count() == 4
    monkeypatch.delenv("LOCAL_SIZE")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu.device_count() == 2
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    # Outside a launcher: NUMA nodes that have cores (node2 is memory only).
    for node, cores in (("node0", "0-7\n"), ("node1", "8-15\n"), ("node2", "\n")):
        (tmp_path / node).mkdir()
        (tmp_path / node / "cpulist").write_text(cores)
    monkeypatch.setattr(cpu_module, "_NUMA_NODES", tmp_path)
    assert cpu.device_count() == 2
    monkeypatch.setattr(cpu_module, "_NUMA_NODES", tmp_path / "absent")
    assert cpu.device_count() == 1


def test_cpu_no_ops(cpu):
    assert cpu.set_device(1) is None and cpu.synchronize() is None and cpu.empty_cache() is None
    assert cpu.range_push("step") is None and cpu.range_pop() is None
    assert cpu.Stream is None and cpu.Event is None and cpu.current_stream() is None and cpu.default_stream() is None
    assert cpu.create_graph() is None and cpu.replay_graph(None) is None
    with cpu.device(0), cpu.stream(None), cpu.capture_to_graph(None):
        pass
    assert cpu.lazy_call(lambda: 42) == 42
    assert cpu.amp() is torch.cpu.amp and not cpu.is_triton_supported()


def test_cpu_rng(cpu):
    assert cpu.random() is torch.random and cpu.default_generator(0) is torch.default_generator
    cpu.manual_seed(1234)
    assert cpu.initial_seed() == 1234
    state = cpu.get_rng_state()
    first = torch.rand(3)
    cpu.set_rng_state(state)
    assert torch.equal(torch.rand(3), first)
    cpu.manual_seed_all(1234)
    assert torch.equal(torch.rand(3), first)


def test_cpu_dtypes_and_tensors(cpu):
    assert cpu.is_bf16_supported() and not cpu.is_fp16_supported()
    assert cpu.supported_dtypes() == [torch.float32, torch.bfloat16]
    made = {name: getattr(cpu, name)([1, 2]) for name in
            ("BFloat16Tensor", "ByteTensor", "DoubleTensor", "FloatTensor", "HalfTensor", "IntTensor", "LongTensor")}
    assert {name: t.dtype for name, t in made.items()} == {
        "BFloat16Tensor": torch.bfloat16, "ByteTensor": torch.uint8, "DoubleTensor": torch.float64,
        "FloatTensor": torch.float32, "HalfTensor": torch.float16, "IntTensor": torch.int32, "LongTensor": torch.int64}
    assert all(cpu.on_accelerator(t) for t in made.values())
    assert not cpu.on_accelerator(SimpleNamespace(device=torch.device("cuda", 0)))
    tensor = torch.ones(2)
    assert cpu.pin_memory(tensor, align_bytes=64) is tensor and not cpu.is_pinned(tensor)


def test_cpu_memory_is_the_process_rss(cpu):
    rss = psutil.Process().memory_info().rss
    slack = 32 << 20  # the process may grow or shrink a little between the two reads
    assert abs(cpu.memory_allocated() - rss) < slack
    assert cpu.memory_reserved() == pytest.approx(cpu.memory_cached(), abs=slack)
    assert cpu.max_memory_allocated() >= cpu.memory_allocated() - slack
    stats = cpu.memory_stats()
    assert set(stats) == {"allocated_bytes.all.current", "allocated_bytes.all.peak",
                          "reserved_bytes.all.current", "reserved_bytes.all.peak"}
    assert stats["allocated_bytes.all.peak"] >= stats["allocated_bytes.all.current"]
    machine = psutil.virtual_memory()
    assert cpu.total_memory() == machine.total
    assert 0 < cpu.available_memory() <= cpu.total_memory()


SPIKE = 256 << 20


def test_cpu_peak_from_the_kernel_sees_an_unsampled_spike():
    if host_memory._kernel_peak() is None:
        pytest.skip("no /proc/self/status VmHWM here")
    cpu = CPUAccelerator()
    cpu.reset_peak_memory_stats()
    before = cpu.memory_allocated()
    spike = b"x" * SPIKE  # written, so resident; freed before anyone asks for the RSS
    del spike
    assert cpu.max_memory_allocated() >= before + SPIKE * 0.9
    cpu.reset_max_memory_allocated()
    assert cpu.max_memory_allocated() < before + SPIKE // 2  # the freed spike is gone from the peak


def test_cpu_sampled_peak_keeps_every_rss_it_reported(monkeypatch):
    # Where the kernel keeps no peak (or cannot reset it), the peak is the largest RSS read since the reset.
    monkeypatch.setattr(host_memory, "_kernel_peak", lambda: None)
    cpu = CPUAccelerator()
    cpu.reset_peak_memory_stats()
    spike = b"x" * SPIKE
    during = cpu.memory_allocated()
    del spike
    assert cpu.max_memory_allocated() >= during and cpu.max_memory_reserved() >= during
    cpu.reset_peak_memory_stats()
    assert cpu.max_memory_allocated() < during - SPIKE // 2


# --- CUDA, without a GPU


def test_cuda_names(gpu, monkeypatch):
    assert gpu.device_name() == "cuda"
    assert gpu.device_name(0) == "cuda:0" and gpu.device_name(3) == "cuda:3"
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert gpu.current_device() == 2 and gpu.current_device_name() == "cuda:2"
    assert gpu.name == "cuda" and gpu.communication_backend_name() == "nccl"
    assert not gpu.is_synchronized_device() and not gpu.use_host_timers()
    assert not gpu.resolves_data_dependency() and not gpu.handles_memory_backpressure()


@pytest.mark.parametrize("capability, allow, expected", [
    ((8, 0), "0", True), ((7, 0), "0", True), ((6, 0), "0", False), ((6, 0), "1", True), ((5, 2), "1", False)])
def test_cuda_fp16_follows_compute_capability(gpu, monkeypatch, capability, allow, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setenv("DS_ALLOW_DEPRECATED_FP16", allow)
    assert gpu.is_fp16_supported() is expected


def test_cuda_dtypes(gpu, monkeypatch):
    assert gpu.supported_dtypes() == [torch.float32, torch.float16, torch.bfloat16]
    assert gpu.is_triton_supported()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # No GPU to run on: nothing beyond fp32 is claimed (DeepSpeed says True here, for building ops).
    assert not gpu.is_bf16_supported() and not gpu.is_fp16_supported() and not gpu.is_triton_supported()
    assert gpu.supported_dtypes() == [torch.float32]


def test_cuda_tensor_factories_build_on_cuda(gpu):
    factory = gpu.HalfTensor
    assert factory.func is torch.tensor and factory.keywords == {"dtype": torch.float16, "device": "cuda"}
    assert gpu.LongTensor.keywords["dtype"] is torch.int64
    assert gpu.on_accelerator(SimpleNamespace(device=torch.device("cuda", 1)))
    assert not gpu.on_accelerator(torch.zeros(1))


def test_cuda_memory_calls(gpu, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 123)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 456)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(device))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (7, 10))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(total_memory=10))
    assert gpu.memory_cached() == gpu.memory_reserved() == 123
    assert gpu.max_memory_cached(1) == 456
    gpu.reset_max_memory_allocated(1)
    gpu.reset_max_memory_cached()
    assert calls == [1, None]
    assert gpu.available_memory() == 7 and gpu.total_memory(0) == 10


def test_cuda_rng_state_passes_the_device_only_when_given(gpu, monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *args: seen.append(args))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *args: args)
    gpu.set_rng_state("s")
    gpu.set_rng_state("s", 1)
    assert seen == [("s",), ("s", 1)]
    assert gpu.get_rng_state() == () and gpu.get_rng_state(2) == (2,)
