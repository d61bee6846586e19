"""Activation checkpointing of a stage's layers in chunks of `activation_checkpoint_interval` (DeepSpeed's rules).

A chunk is recomputed in backward instead of keeping its activations. DeepSpeed checkpoints a chunk only when it is
worth it and safe: by default when some layer in it has parameters (a chunk of activations/reshapes saves nothing);
with `checkpointable_layers` (a list of class names) only when every layer in it is of a listed class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.utils.checkpoint
from torch import nn


def checkpoint(function: Callable[..., Any], *args: Any) -> Any:
    """The default activation_checkpoint_func, DeepSpeed's calling convention `func(function, *args)` on torch's
    non-reentrant checkpoint: it handles inputs without requires_grad (a stage's first layer often takes token ids)
    and tuple outputs, which the reentrant variant does not. It is dsrun.checkpointing's (as DeepSpeed's default is
    deepspeed.checkpointing's), so the activation_checkpointing settings (cpu_checkpointing, ...) apply to it."""
    from dsrun.checkpointing.function import recompute

    return recompute(function, *args)


def is_checkpointable(funcs: Sequence[Callable[..., Any]], checkpointable_layers: Sequence[str] | None) -> bool:
    """Whether a chunk of forward functions is run through the checkpoint function (DeepSpeed's _is_checkpointable
    outside its Megatron GPT special case). Class names are those of the forward functions themselves: a lambda is
    'function', a tied layer with a forward_fn is 'partial'."""
    if checkpointable_layers is not None:
        return all(type(f).__name__ in checkpointable_layers for f in funcs)
    return any(isinstance(f, nn.Module) and any(True for _ in f.parameters()) for f in funcs)


def chunks(num_layers: int, interval: int) -> list[tuple[int, int]]:
    """The [start, stop) local index ranges of interval layers each (the last one shorter)."""
    return [(start, min(start + interval, num_layers)) for start in range(0, num_layers, interval)]


def reentrant_checkpoint(function: Callable[..., Any], *args: Any) -> Any:
    """torch's reentrant checkpoint (DeepSpeed's default; the config's pipeline.use_reentrant true). It differentiates
    only through inputs that require grad, so a chunk fed none (the first stage's) would leave its parameters without
    gradients (DeepSpeed#3895): floating inputs that do not require grad go in as detached copies that do."""
    args = tuple(arg.detach().requires_grad_() if isinstance(arg, torch.Tensor) and arg.is_floating_point()
                 and not arg.requires_grad else arg for arg in args)
    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=True)
