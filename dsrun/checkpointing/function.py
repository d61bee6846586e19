"""`checkpoint(function, *args)`: DeepSpeed's calling convention on torch's non-reentrant checkpoint.

The forward keeps only the function's inputs; the backward runs the function again to get what its own backward
needs. torch.utils.checkpoint (use_reentrant=False) does the recomputation, restores the global generators for it
(so dropout draws the same mask), passes non-tensor arguments through, and, unlike DeepSpeed's reentrant
CheckpointFunction, gives the parameters gradients even when no input requires grad. dsrun adds what the settings
(configure / the config section) ask for, and puts the RNG tracker back as it was at the forward for the
recomputation.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.utils.checkpoint
from torch.autograd.graph import register_multi_grad_hook, save_on_cpu

from dsrun.checkpointing.rng import get_cuda_rng_tracker
from dsrun.checkpointing.settings import active_settings


def checkpoint(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `function(*args, **kwargs)` keeping only its inputs for the backward, which recomputes it.

    Returns what DeepSpeed's returns: the function's outputs, non-tensors included, a one-element tuple or list
    unwrapped and a list as a tuple. Tensor keyword arguments are saved like positional ones (DeepSpeed folds them
    in the same way), so cpu_checkpointing moves them too.
    """
    return _as_deepspeed_returns(recompute(function, *args, **kwargs))


def recompute(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """checkpoint() with the function's outputs as they are (a pipeline chunk's tuple stays the tuple it was)."""
    settings = active_settings()
    flat = (*args, *kwargs.values())
    replay = _Replay(function, len(args), tuple(kwargs), settings.synchronize)
    # torch's checkpoint saves the inputs before it installs its own saved-tensor hooks, so save_on_cpu around it
    # moves exactly the inputs; what the function's ops save goes through torch's hooks and is recomputed instead.
    keep = save_on_cpu(pin_memory=_on_cuda(flat)) if settings.cpu_checkpointing else contextlib.nullcontext()
    if settings.synchronize:
        _synchronize()
    with keep:
        outputs = torch.utils.checkpoint.checkpoint(replay, *flat, use_reentrant=False)
    if settings.synchronize:
        _synchronize()
        _synchronize_when_input_grads_are_done(flat)
    return outputs


def non_reentrant_checkpoint(function: Callable[..., Any], *args: Any) -> Any:
    """DeepSpeed's non-reentrant variant (PipelineModule's with use_reentrant false): dsrun's checkpoint already is."""
    return checkpoint(function, *args)


class _Replay:
    """The function as torch's checkpoint calls it: first for the forward, then again for each recomputation."""

    def __init__(self, function: Callable[..., Any], positional: int, keywords: tuple[str, ...], synchronize: bool):
        self.function, self.positional, self.keywords, self.synchronize = function, positional, keywords, synchronize
        self.forward_states: dict[str, torch.Tensor] | None = None

    def __call__(self, *flat: Any) -> Any:
        args, kwargs = flat[:self.positional], dict(zip(self.keywords, flat[self.positional:], strict=True))
        tracker = get_cuda_rng_tracker()
        if self.forward_states is None:
            self.forward_states = tracker.get_states()
            return self.function(*args, **kwargs)
        if self.synchronize:
            _synchronize()  # the backward reaches this checkpoint
        outside = tracker.get_states()
        tracker.set_states(self.forward_states)  # a fork() inside draws what it drew in the forward
        try:
            return self.function(*args, **kwargs)
        finally:  # torch may stop the recomputation early, by an exception, once it has what it needs
            tracker.set_states(outside)


def _as_deepspeed_returns(outputs: Any) -> Any:
    if isinstance(outputs, tuple | list):
        if len(outputs) == 1:
            return outputs[0]
        return tuple(outputs) if isinstance(outputs, list) else outputs
    return outputs


def _on_cuda(values: tuple[Any, ...]) -> bool:
    """Pinned host memory only pays off for copies from the GPU; a CPU input stays as it is."""
    return any(isinstance(value, torch.Tensor) and value.is_cuda for value in values)


def _synchronize() -> None:
    """Wait for the GPU when CUDA is in use; on the CPU every operation has finished when it returns."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _synchronize_when_input_grads_are_done(flat: tuple[Any, ...]) -> None:
    """The backward's end of this checkpoint: when the gradients of its inputs are computed (with no input that
    requires grad, the next checkpoint's boundary or the optimizer step is the next wait)."""
    inputs = [value for value in flat if isinstance(value, torch.Tensor) and value.requires_grad]
    if not inputs or not torch.is_grad_enabled():
        return

    def done(grads: Any) -> None:
        _synchronize()
        handle.remove()  # once: a leaf input (a parameter) would otherwise collect one hook per forward

    handle = register_multi_grad_hook(inputs, done)
