"""A model built on the meta device, split first, then filled from a dsrun checkpoint: each rank allocates and reads
only its own shards (torch.distributed.checkpoint reads the byte ranges a DTensor's local shard covers), so no rank
holds the whole model at any moment.

Weights whose layout the split changed (GPT-2's Conv1D transposed into nn.Linear, the fused qkv regrouped) cannot
be read as shards of the saved tensor: those are read whole, one tensor at a time, transformed, and cut to this
rank's part.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from dsrun.errors import UsageError
from dsrun.inference.shard import Relayout


def own_shards_source(checkpoint: Path | None) -> Path | None:
    """The tag directory to read shards from, or None when `checkpoint` is a file or a pipeline's checkpoint
    (whose layer names differ from the model's; it is read whole)."""
    if checkpoint is None or not checkpoint.is_dir():
        return None
    from dsrun.runtime.checkpoint import layout
    from dsrun.runtime.checkpoint.consolidate import resolve_checkpoint

    source = resolve_checkpoint(checkpoint)
    if torch.load(source / layout.STATE_FILE, weights_only=False).get("pipeline"):
        return None
    return source


def materialize_local(model: nn.Module, device: torch.device) -> None:
    """Give every meta parameter real (uninitialised) storage: a DTensor only its local shard."""
    for name, buffer in model.named_buffers():
        if buffer.is_meta:
            raise UsageError(f"buffer {name} is on the meta device and is not in a checkpoint's weights: build the"
                             " model with only its parameters on meta (accelerate's init_empty_weights() keeps"
                             " buffers), or on the CPU")
    made: dict[int, nn.Parameter] = {}  # tied parameters stay one object
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is None or not param.is_meta:
                continue
            if id(param) not in made:
                if isinstance(param, DTensor):
                    local = torch.empty(param.to_local().shape, dtype=param.dtype, device=device)
                    data: torch.Tensor = DTensor.from_local(local, param.device_mesh, param.placements,
                                                            run_check=False, shape=param.shape,
                                                            stride=param.stride())
                else:
                    data = torch.empty(param.shape, dtype=param.dtype, device=device)
                made[id(param)] = nn.Parameter(data, requires_grad=False)
            module._parameters[key] = made[id(param)]


def load(model: nn.Module, source: Path, relayouts: dict[str, Relayout]) -> None:
    """Fill the split model from the checkpoint tag directory `source` (keys "model.<state_dict name>")."""
    state = model.state_dict()
    saved = dcp.FileSystemReader(str(source)).read_metadata().state_dict_metadata
    wanted = {f"model.{name}": tensor for name, tensor in state.items() if name not in relayouts}
    missing = sorted(key.removeprefix("model.") for key in [*wanted, *(f"model.{n}" for n in relayouts)]
                     if key not in saved)
    if missing:
        raise UsageError(f"checkpoint {source} does not fit the model: {len(missing)} of its weights missing"
                         f" (first {missing[0]!r})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(wanted, checkpoint_id=str(source))
    for name, relayout in relayouts.items():
        target = state[name]
        meta = saved[f"model.{name}"]
        whole = {f"model.{name}": torch.empty(meta.size, dtype=target.dtype)}  # type: ignore[union-attr]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(whole, checkpoint_id=str(source))
        full = relayout(whole[f"model.{name}"]).to(target.device)
        if isinstance(target, DTensor):
            mine = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None).to_local()
            target.to_local().copy_(mine)
        else:
            target.copy_(full)
