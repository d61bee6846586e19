"""The CUDA accelerator: DeepSpeed's CUDA accelerator answers, each a thin call into torch.cuda, with NCCL.

torch is imported inside each method, so creating the accelerator (and importing this module) stays torch-free.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from dsrun.accelerator.base import Accelerator


def _cuda() -> Any:
    import torch.cuda

    return torch.cuda


class CUDAAccelerator(Accelerator):
    _name = "cuda"
    _communication_backend_name = "nccl"

    def is_synchronized_device(self) -> bool:
        return False  # kernels run asynchronously: timing needs events, data dependencies need syncs

    # Devices
    def device_name(self, device_index: int | None = None) -> str:
        return "cuda" if device_index is None else f"cuda:{device_index}"

    def device(self, device_index: int | None = None) -> Any:
        return _cuda().device(device_index)

    def set_device(self, device_index: int) -> None:
        _cuda().set_device(device_index)

    def current_device(self) -> int:
        return _cuda().current_device()

    def current_device_name(self) -> str:
        return self.device_name(self.current_device())

    def device_count(self) -> int:
        return _cuda().device_count()

    def synchronize(self, device_index: int | None = None) -> None:
        _cuda().synchronize(device_index)

    def is_available(self) -> bool:
        return _cuda().is_available()

    # Random numbers: torch.cuda's per-device generators; torch.cuda's default device is the current one
    def random(self) -> Any:
        import torch

        return torch.random

    def set_rng_state(self, new_state: Any, device_index: int | None = None) -> None:
        _cuda().set_rng_state(new_state, *(() if device_index is None else (device_index,)))

    def get_rng_state(self, device_index: int | None = None) -> Any:
        return _cuda().get_rng_state(*(() if device_index is None else (device_index,)))

    def manual_seed(self, seed: int) -> Any:
        return _cuda().manual_seed(seed)

    def manual_seed_all(self, seed: int) -> Any:
        return _cuda().manual_seed_all(seed)

    def initial_seed(self) -> int:
        return _cuda().initial_seed()

    def default_generator(self, device_index: int) -> Any:
        return _cuda().default_generators[device_index]

    # Streams and events
    @property
    def Stream(self) -> Any:
        return _cuda().Stream

    def stream(self, stream: Any) -> Any:
        return _cuda().stream(stream)

    def current_stream(self, device_index: int | None = None) -> Any:
        return _cuda().current_stream(device_index)

    def default_stream(self, device_index: int | None = None) -> Any:
        return _cuda().default_stream(device_index)

    @property
    def Event(self) -> Any:
        return _cuda().Event

    # Memory: torch's caching allocator. "cached" is torch's old name for "reserved"; the old names now warn.
    def empty_cache(self) -> None:
        _cuda().empty_cache()

    def memory_allocated(self, device_index: int | None = None) -> int:
        return _cuda().memory_allocated(device_index)

    def max_memory_allocated(self, device_index: int | None = None) -> int:
        return _cuda().max_memory_allocated(device_index)

    def memory_reserved(self, device_index: int | None = None) -> int:
        return _cuda().memory_reserved(device_index)

    def max_memory_reserved(self, device_index: int | None = None) -> int:
        return _cuda().max_memory_reserved(device_index)

    def reset_peak_memory_stats(self, device_index: int | None = None) -> None:
        _cuda().reset_peak_memory_stats(device_index)

    memory_cached = memory_reserved
    max_memory_cached = max_memory_reserved
    # torch's reset_max_memory_* functions reset every peak (with a FutureWarning saying so); this is that, quietly.
    reset_max_memory_allocated = reset_max_memory_cached = reset_peak_memory_stats

    def memory_stats(self, device_index: int | None = None) -> dict[str, Any]:
        return _cuda().memory_stats(device_index)

    def total_memory(self, device_index: int | None = None) -> int:
        return _cuda().get_device_properties(device_index).total_memory

    def available_memory(self, device_index: int | None = None) -> int:
        # The driver's free figure, which counts other processes on the GPU too (DeepSpeed asks NVML for the same).
        free, _total = _cuda().mem_get_info(device_index)
        return free

    # Data types
    def is_bf16_supported(self) -> bool:
        # DeepSpeed says True without a GPU (for building ops); with no GPU to run on, dsrun says False.
        cuda = _cuda()
        return cuda.is_available() and cuda.is_bf16_supported()

    def is_fp16_supported(self) -> bool:
        cuda = _cuda()
        if not cuda.is_available():
            return False
        major, _minor = cuda.get_device_capability()
        # DeepSpeed's rule: fp16 from Volta (7.x) on; Pascal (6.x) only when DS_ALLOW_DEPRECATED_FP16=1.
        return major >= 7 or (major == 6 and os.environ.get("DS_ALLOW_DEPRECATED_FP16", "0") == "1")

    def supported_dtypes(self) -> list:
        import torch

        dtypes = [torch.float]
        if self.is_fp16_supported():
            dtypes.append(torch.half)
        if self.is_bf16_supported():
            dtypes.append(torch.bfloat16)
        return dtypes

    # Tensors
    def _tensor_factory(self, dtype_name: str) -> Any:
        import torch

        # torch.tensor rather than the legacy torch.cuda.*Tensor types, as DeepSpeed: FloatTensor([1, 2]) copies data.
        return functools.partial(torch.tensor, dtype=getattr(torch, dtype_name), device="cuda")

    def pin_memory(self, tensor: Any, align_bytes: int = 1) -> Any:
        return tensor.pin_memory()

    def is_pinned(self, tensor: Any) -> bool:
        return tensor.is_pinned()

    # Misc
    def amp(self) -> Any:
        import torch.cuda.amp

        return torch.cuda.amp

    def range_push(self, msg: str) -> None:
        _cuda().nvtx.range_push(msg)

    def range_pop(self) -> None:
        _cuda().nvtx.range_pop()

    def lazy_call(self, callback: Any) -> Any:
        # Runs now if CUDA is initialised, else queued until it is (torch.cuda's own mechanism).
        return _cuda()._lazy_call(callback)

    def is_triton_supported(self) -> bool:
        cuda = _cuda()
        return cuda.is_available() and cuda.get_device_capability()[0] >= 8

    def create_graph(self) -> Any:
        return _cuda().CUDAGraph()

    def capture_to_graph(self, graph: Any, pool: Any = None, stream: Any = None) -> Any:
        return _cuda().graph(graph, pool, stream)

    def replay_graph(self, graph: Any) -> None:
        graph.replay()

    def export_envs(self) -> list[str]:
        return ["NCCL"]  # prefix of the variables DeepSpeed's multi-node launcher forwards to workers
