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
from dsrun.inference import weights
from dsrun.inference.shard import Relayout


def own_shards_source(checkpoint: Path | None) -> Path | None:
    """The tag directory to read shards from, or None when `checkpoint` is a file."""
    if checkpoint is None or not checkpoint.is_dir():
        return None
    from dsrun.runtime.checkpoint.consolidate import resolve_checkpoint

    return resolve_checkpoint(checkpoint)


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


def _holds_saved(source: Path, key: str, target: torch.Tensor) -> bool:
    """Whether `target` (this rank's part, filled) holds the checkpoint's tensor `key` in that part."""
    saved = torch.empty_like(target)  # a DTensor like `target`: this rank's part
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({key: saved}, checkpoint_id=str(source))
    return torch.equal(*(t.to_local() if isinstance(t, DTensor) else t for t in (saved, target)))


def load(model: nn.Module, source: Path, relayouts: dict[str, Relayout]) -> None:
    """Fill the split model from the checkpoint tag directory `source` (keys "model.<saved name>"; a pipeline's
    saved names are its layer indices, see consolidate.saved_names)."""
    from dsrun.runtime.checkpoint.consolidate import saved_names

    state = model.state_dict(keep_vars=True)  # tied weights are one object under several names
    saved = dcp.FileSystemReader(str(source)).read_metadata().state_dict_metadata
    keys = {name: f"model.{key}" for name, key in saved_names(source, [k.removeprefix("model.") for k in saved
                                                                         if k.startswith("model.")]).items()}
    # Extra names too: a smaller model (6 of a checkpoint's 12 layers) must not load silently.
    missing = sorted(name for name in state if name not in keys)
    weights.check_fits(source, missing, sorted(name for name in keys if name not in state))
    done: set[int] = set()
    pending = []
    for name, tensor in state.items():
        if name not in relayouts and id(tensor) not in done:
            done.add(id(tensor))
            pending.append((keys[name], tensor))
    # A saved tensor can fill several of the model's (a pipeline's tied layer, built untied): a load per round, each
    # key at most once in a round.
    while pending:
        this_round: dict[str, torch.Tensor] = {}
        later = []
        for key, tensor in pending:
            if key in this_round:
                later.append((key, tensor))
            else:
                this_round[key] = tensor
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(this_round, checkpoint_id=str(source))
        pending = later
    # Each tied tensor now holds its first name's saved values (a relaid-out GPT-2 Conv1D weight is never tied).
    weights.check_ties(source, model, lambda first, other: keys[first] == keys[other] or first in relayouts
                       or _holds_saved(source, keys[other], state[first]))
    for name, relayout in relayouts.items():
        target = state[name]
        meta = saved[keys[name]]
        whole = {keys[name]: torch.empty(meta.size, dtype=target.dtype)}  # type: ignore[union-attr]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(whole, checkpoint_id=str(source))
        full = relayout(whole[keys[name]]).to(target.device)
        with torch.no_grad():
            if isinstance(target, DTensor):
                mine = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None).to_local()
                target.to_local().copy_(mine)
            else:
                target.copy_(full)
