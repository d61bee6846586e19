"""The interface every dsrun accelerator implements: DeepSpeed's `DeepSpeedAccelerator` method names and meanings.

Nothing here imports torch: the launcher side of dsrun must stay torch-free, and choosing an accelerator from the
environment should not cost torch's start-up. Subclasses import torch inside the methods that need it.
"""

from __future__ import annotations

import abc
from typing import Any, MutableMapping, Sequence

from dsrun.accelerator.ops import TorchKernels


def _tensor_type(dtype_name: str) -> property:
    return property(lambda self: self._tensor_factory(dtype_name), doc=f"Builds {dtype_name} tensors on this device.")


class Accelerator(TorchKernels, abc.ABC):
    """One kind of device (CUDA GPU or CPU), seen through DeepSpeed's accelerator API."""

    # DeepSpeed scripts read `accel._name`; `name` is the same value without the underscore.
    _name: str = ""
    _communication_backend_name: str = ""

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<dsrun accelerator {self._name!r}, backend {self._communication_backend_name!r}>"

    # DeepSpeed derives these three from whether the device runs in program order with the host; keeping them as
    # one switch means a device cannot claim, say, host timers while its kernels run asynchronously.
    @abc.abstractmethod
    def is_synchronized_device(self) -> bool: ...

    def use_host_timers(self) -> bool:
        return self.is_synchronized_device()

    def resolves_data_dependency(self) -> bool:
        return self.is_synchronized_device()

    def handles_memory_backpressure(self) -> bool:
        return self.is_synchronized_device()

    def communication_backend_name(self) -> str:
        return self._communication_backend_name

    # Devices
    @abc.abstractmethod
    def device_name(self, device_index: int | None = None) -> str: ...
    @abc.abstractmethod
    def device(self, device_index: int | None = None) -> Any: ...
    @abc.abstractmethod
    def set_device(self, device_index: int) -> None: ...
    @abc.abstractmethod
    def current_device(self) -> int: ...
    @abc.abstractmethod
    def current_device_name(self) -> str: ...
    @abc.abstractmethod
    def device_count(self) -> int: ...
    @abc.abstractmethod
    def synchronize(self, device_index: int | None = None) -> None: ...
    @abc.abstractmethod
    def is_available(self) -> bool: ...

    # Random numbers
    @abc.abstractmethod
    def random(self) -> Any: ...
    @abc.abstractmethod
    def set_rng_state(self, new_state: Any, device_index: int | None = None) -> None: ...
    @abc.abstractmethod
    def get_rng_state(self, device_index: int | None = None) -> Any: ...
    @abc.abstractmethod
    def manual_seed(self, seed: int) -> Any: ...
    @abc.abstractmethod
    def manual_seed_all(self, seed: int) -> Any: ...
    @abc.abstractmethod
    def initial_seed(self) -> int: ...
    @abc.abstractmethod
    def default_generator(self, device_index: int) -> Any: ...

    # Streams and events (the properties give the class, as torch.cuda.Stream / torch.cuda.Event do)
    @property
    @abc.abstractmethod
    def Stream(self) -> Any: ...
    @abc.abstractmethod
    def stream(self, stream: Any) -> Any: ...
    @abc.abstractmethod
    def current_stream(self, device_index: int | None = None) -> Any: ...
    @abc.abstractmethod
    def default_stream(self, device_index: int | None = None) -> Any: ...
    @property
    @abc.abstractmethod
    def Event(self) -> Any: ...

    # Memory, in bytes
    @abc.abstractmethod
    def empty_cache(self) -> None: ...
    @abc.abstractmethod
    def memory_allocated(self, device_index: int | None = None) -> int: ...
    @abc.abstractmethod
    def max_memory_allocated(self, device_index: int | None = None) -> int: ...
    @abc.abstractmethod
    def reset_max_memory_allocated(self, device_index: int | None = None) -> None: ...
    @abc.abstractmethod
    def memory_cached(self, device_index: int | None = None) -> int: ...
    @abc.abstractmethod
    def max_memory_cached(self, device_index: int | None = None) -> int: ...
    @abc.abstractmethod
    def reset_max_memory_cached(self, device_index: int | None = None) -> None: ...
    @abc.abstractmethod
    def memory_reserved(self, device_index: int | None = None) -> int: ...
    @abc.abstractmethod
    def max_memory_reserved(self, device_index: int | None = None) -> int: ...
    @abc.abstractmethod
    def reset_peak_memory_stats(self, device_index: int | None = None) -> None: ...
    @abc.abstractmethod
    def memory_stats(self, device_index: int | None = None) -> dict[str, Any]: ...
    @abc.abstractmethod
    def total_memory(self, device_index: int | None = None) -> int: ...
    @abc.abstractmethod
    def available_memory(self, device_index: int | None = None) -> int: ...

    # Data types
    @abc.abstractmethod
    def is_bf16_supported(self) -> bool: ...
    @abc.abstractmethod
    def is_fp16_supported(self) -> bool: ...
    @abc.abstractmethod
    def supported_dtypes(self) -> list: ...

    # Tensors: each *Tensor property gives a callable that builds a tensor of that dtype on this device
    @abc.abstractmethod
    def _tensor_factory(self, dtype_name: str) -> Any: ...

    BFloat16Tensor = _tensor_type("bfloat16")
    ByteTensor = _tensor_type("uint8")
    DoubleTensor = _tensor_type("float64")
    FloatTensor = _tensor_type("float32")
    HalfTensor = _tensor_type("float16")
    IntTensor = _tensor_type("int32")
    LongTensor = _tensor_type("int64")

    @abc.abstractmethod
    def pin_memory(self, tensor: Any, align_bytes: int = 1) -> Any: ...
    @abc.abstractmethod
    def is_pinned(self, tensor: Any) -> bool: ...

    def on_accelerator(self, tensor: Any) -> bool:
        return tensor.device.type == self._name

    # Misc
    @abc.abstractmethod
    def amp(self) -> Any: ...
    @abc.abstractmethod
    def range_push(self, msg: str) -> None: ...
    @abc.abstractmethod
    def range_pop(self) -> None: ...
    @abc.abstractmethod
    def lazy_call(self, callback: Any) -> Any: ...
    @abc.abstractmethod
    def is_triton_supported(self) -> bool: ...
    @abc.abstractmethod
    def create_graph(self) -> Any: ...
    @abc.abstractmethod
    def capture_to_graph(self, graph: Any, pool: Any = None, stream: Any = None) -> Any: ...
    @abc.abstractmethod
    def replay_graph(self, graph: Any) -> None: ...
    @abc.abstractmethod
    def export_envs(self) -> list[str]: ...

    def visible_devices_envs(self) -> list[str]:
        # The variable the dsrun launcher narrows each node's GPUs with; DeepSpeed names it for CPU as well.
        return ["CUDA_VISIBLE_DEVICES"]

    def set_visible_devices_envs(self, current_env: MutableMapping[str, str], local_accelerator_ids: Sequence) -> None:
        for var in self.visible_devices_envs():
            current_env[var] = ",".join(str(i) for i in local_accelerator_ids)
