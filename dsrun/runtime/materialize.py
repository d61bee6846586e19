"""Models built on the meta device (no memory until placed): give them real storage and initial values.

Building on meta and materialising after sharding halves the start-up peak, and at stage 3 no rank ever holds
the whole model. Initial values come from each module's own reset_parameters() and are rank 0's at every stage,
as in DeepSpeed: at stages 0-2 the strategy broadcasts them; at stage 3 each module is initialised whole, one module
at a time, and every rank keeps its shard of rank 0's values.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from dsrun.errors import UsageError


def is_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def check_initialisable(model: nn.Module) -> None:
    """Every module owning parameters or buffers must know how to initialise them."""
    for name, module in model.named_modules():
        if _owns_tensors(module) and not callable(getattr(module, "reset_parameters", None)):
            raise UsageError(
                f"the model is on the meta device, but module {name or type(module).__name__}"
                f" ({type(module).__name__}) owns tensors and has no reset_parameters() to initialise them:"
                " add one, or build the model on a real device"
            )


def materialize(model: nn.Module, device: torch.device) -> None:
    model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            if _owns_tensors(module):
                _reset(module)


def _reset(module: nn.Module) -> None:
    cast(Any, module).reset_parameters()  # check_initialisable made sure every module owning tensors has one


def _owns_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def materialize_sharded(model: nn.Module, device: torch.device) -> None:
    """Materialise a model whose parameters are FSDP2 shards (DTensors) with rank 0's initial values.

    Each module's own parameters are made whole for its reset_parameters() (every rank runs it, so the random
    streams advance as if each rank had built the model on a real device), then rank 0's values are scattered into
    the shards. The whole of one module is the most any rank holds at once.
    """
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, distribute_tensor

    model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            if not _owns_tensors(module):
                continue
            shards: dict[str, DTensor] = {}  # FSDP2's sharded parameters (DTensor parameters)
            wholes: dict[str, nn.Parameter] = {}
            for name, param in module._parameters.items():
                if isinstance(param, DTensor):
                    shards[name] = param
                    whole = torch.empty(param.shape, dtype=param.dtype, device=param.to_local().device)
                    wholes[name] = module._parameters[name] = nn.Parameter(whole, requires_grad=param.requires_grad)
            _reset(module)
            for name, shard in shards.items():
                mine = distribute_tensor(wholes[name].data, shard.device_mesh, shard.placements, src_data_rank=0)
                shard.to_local().copy_(mine.to_local())
                module._parameters[name] = cast(nn.Parameter, shard)  # the very parameter FSDP2 registered
            if dist.is_initialized() and dist.get_world_size() > 1:
                # From the first rank of the ranks sharing the module's parameters: all, or an MoE expert's copies.
                group = next(iter(shards.values())).device_mesh.get_group() if shards else None
                for buffer in module.buffers(recurse=False):
                    dist.broadcast(buffer, group=group, group_src=0)
