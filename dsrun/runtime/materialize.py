"""Models built on the meta device (no memory until placed): give them real storage and initial values.

Building on meta and materialising after sharding halves the start-up peak, and at stage 3 no rank ever holds
the whole model. Initial values come from each module's own reset_parameters(); at stages 0-2 rank 0's values are
then broadcast (DDP or the sharded strategy), at stage 3 each rank initialises its own shards.
"""

from __future__ import annotations

import torch
from torch import nn

from dsrun.errors import UsageError


def is_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def check_initialisable(model: nn.Module) -> None:
    """Every module owning parameters or buffers must know how to initialise them."""
    for name, module in model.named_modules():
        owns = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
        if owns and not callable(getattr(module, "reset_parameters", None)):
            raise UsageError(
                f"the model is on the meta device, but module {name or type(module).__name__}"
                f" ({type(module).__name__}) owns tensors and has no reset_parameters() to initialise them:"
                " add one, or build the model on a real device"
            )


def materialize(model: nn.Module, device: torch.device) -> None:
    model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
                module.reset_parameters()
