"""The CPU accelerator: what DeepSpeed's CPU accelerator answers, on gloo, with memory figures from the process RSS.

Device, stream, graph and profiling-range calls are no-ops (a CPU runs in program order and has one device per
process), so a script written for GPUs runs unchanged on CPU workers.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from dsrun.accelerator.base import Accelerator
from dsrun.accelerator.host_memory import ProcessMemory

_NUMA_NODES = Path("/sys/devices/system/node")
# DeepSpeed's CPU tensor types are torch's legacy CPU constructors (FloatTensor(3) is an uninitialised 3-vector).
_LEGACY_TYPES = {"bfloat16": "BFloat16Tensor", "uint8": "ByteTensor", "float64": "DoubleTensor",
                 "float32": "FloatTensor", "float16": "HalfTensor", "int32": "IntTensor", "int64": "LongTensor"}


def _torch() -> Any:
    import torch

    return torch


def _numa_nodes_with_cores() -> int:
    # Memory-only nodes (HBM in flat mode, CXL) have an empty cpulist and cannot host a worker.
    try:
        lists = [(node / "cpulist").read_text().strip() for node in _NUMA_NODES.glob("node[0-9]*")]
    except OSError:
        return 0
    return sum(1 for cores in lists if cores)


class CPUAccelerator(Accelerator):
    _name = "cpu"
    # DeepSpeed picks oneCCL when its bindings are installed; dsrun's CPU workers always run gloo.
    _communication_backend_name = "gloo"

    def __init__(self) -> None:
        self._memory = ProcessMemory()

    def is_synchronized_device(self) -> bool:
        return True

    # Devices: one per worker process, named "cpu" whatever the index
    def device_name(self, device_index: int | None = None) -> str:
        return "cpu"

    def device(self, device_index: int | None = None) -> Any:
        # DeepSpeed returns None; an empty context also serves `with accel.device(i):`, which CUDA code writes.
        return contextlib.nullcontext()

    def set_device(self, device_index: int) -> None:
        return None

    def current_device(self) -> int:
        # The worker's slot on its node, as DeepSpeed reports it (DeepSpeed returns the env string; this is an int).
        return int(os.environ.get("LOCAL_RANK", "0"))

    def current_device_name(self) -> str:
        return "cpu"

    def device_count(self) -> int:
        # Workers on this node when launched; otherwise one per NUMA node with cores, as DeepSpeed counts.
        for var in ("LOCAL_SIZE", "LOCAL_WORLD_SIZE"):
            value = os.environ.get(var, "")
            if value.isdigit() and int(value) > 0:
                return int(value)
        return max(1, _numa_nodes_with_cores())

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def is_available(self) -> bool:
        return True

    # Random numbers: the CPU generator is the only one, so "all" is the same as one
    def random(self) -> Any:
        return _torch().random

    def set_rng_state(self, new_state: Any, device_index: int | None = None) -> None:
        _torch().set_rng_state(new_state)

    def get_rng_state(self, device_index: int | None = None) -> Any:
        return _torch().get_rng_state()

    def manual_seed(self, seed: int) -> Any:
        return _torch().manual_seed(seed)

    def manual_seed_all(self, seed: int) -> Any:
        return self.manual_seed(seed)

    def initial_seed(self) -> int:
        return _torch().initial_seed()

    def default_generator(self, device_index: int) -> Any:
        return _torch().default_generator

    # Streams and events do not exist on CPU: None for the types and current streams, an empty context to enter
    @property
    def Stream(self) -> Any:
        return None

    def stream(self, stream: Any) -> Any:
        return contextlib.nullcontext()

    def current_stream(self, device_index: int | None = None) -> Any:
        return None

    def default_stream(self, device_index: int | None = None) -> Any:
        return None

    @property
    def Event(self) -> Any:
        return None

    # Memory: the process's RSS (allocated, cached and reserved are the same figure) and the machine's RAM
    def empty_cache(self) -> None:
        return None

    def memory_allocated(self, device_index: int | None = None) -> int:
        return self._memory.current()

    def max_memory_allocated(self, device_index: int | None = None) -> int:
        return self._memory.peak()

    def reset_max_memory_allocated(self, device_index: int | None = None) -> None:
        self._memory.reset_peak()

    memory_cached = memory_reserved = memory_allocated
    max_memory_cached = max_memory_reserved = max_memory_allocated
    reset_max_memory_cached = reset_peak_memory_stats = reset_max_memory_allocated

    def memory_stats(self, device_index: int | None = None) -> dict[str, Any]:
        return self._memory.stats()

    def total_memory(self, device_index: int | None = None) -> int:
        return self._memory.machine_total()

    def available_memory(self, device_index: int | None = None) -> int:
        return self._memory.machine_available()

    # Data types: fp16 counts as unsupported, as in DeepSpeed (torch's CPU fp16 kernels are few and slow); bf16 has
    # CPU autocast
    def is_bf16_supported(self) -> bool:
        return True

    def is_fp16_supported(self) -> bool:
        return False

    def supported_dtypes(self) -> list:
        torch = _torch()
        return [torch.float, torch.bfloat16]

    # Tensors
    def _tensor_factory(self, dtype_name: str) -> Any:
        return getattr(_torch(), _LEGACY_TYPES[dtype_name])

    def pin_memory(self, tensor: Any, align_bytes: int = 1) -> Any:
        # Pinning is for host-to-GPU copies; with no GPU there is nothing to pin for (and torch would raise).
        return tensor

    def is_pinned(self, tensor: Any) -> bool:
        return tensor.is_pinned()

    # Misc
    def amp(self) -> Any:
        import torch.cpu.amp

        return torch.cpu.amp

    def range_push(self, msg: str) -> None:
        return None

    def range_pop(self) -> None:
        return None

    def lazy_call(self, callback: Any) -> Any:
        # Nothing to wait for: CPU state exists as soon as torch is imported.
        return callback()

    def is_triton_supported(self) -> bool:
        return False

    def create_graph(self) -> Any:
        return None

    def capture_to_graph(self, graph: Any, pool: Any = None, stream: Any = None) -> Any:
        return contextlib.nullcontext()

    def replay_graph(self, graph: Any) -> None:
        return None

    def export_envs(self) -> list[str]:
        return []
