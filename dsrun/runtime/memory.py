"""Per-rank model-state memory, counted from the tensors themselves: parameters, gradients, optimizer state.

Each storage is counted once (an fp32 master that is a view of its parameter costs nothing extra; the flat gradient
buffer of stages 0-1 counts once for all the gradients viewing it), and DTensors count their local shard only. This
is what the ZeRO formulas (16Ψ, 4Ψ+12Ψ/N, 2Ψ+14Ψ/N, 16Ψ/N) describe, independent of allocator caching or RSS noise.
"""

from __future__ import annotations

from typing import Iterable

import torch


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _storages(tensors: Iterable[torch.Tensor | None]) -> dict[int, int]:
    found: dict[int, int] = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            storage = _local(tensor).untyped_storage()
            found[storage.data_ptr()] = storage.nbytes()
    return found


def model_state_bytes(model: torch.nn.Module, masters: dict, optimizer, grads: Iterable[torch.Tensor] = ()
                      ) -> dict[str, int]:
    """Bytes of parameters, gradients (`grads`: those a strategy holds outside .grad) and optimizer state (fp32
    masters included) held by this rank."""
    params = list(model.parameters())
    param_storage = _storages(params)
    grad_storage = _storages([p.grad for p in params] + [m.grad for m in masters.values()] + list(grads))
    state_tensors = [m for m in masters.values()]
    if optimizer is not None:
        for state in optimizer.state.values():
            state_tensors.extend(v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    optimizer_storage = _storages(state_tensors)
    for ptr in param_storage:  # masters that are views of the parameters are already counted
        optimizer_storage.pop(ptr, None)
        grad_storage.pop(ptr, None)
    for ptr in grad_storage:
        optimizer_storage.pop(ptr, None)
    counts = {
        "params": sum(param_storage.values()),
        "grads": sum(grad_storage.values()),
        "optimizer": sum(optimizer_storage.values()),
    }
    counts["total"] = sum(counts.values())
    return counts
