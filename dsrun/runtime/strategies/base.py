"""What every ZeRO stage's strategy provides to the engine, and what it is given."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsrun.runtime.distributed import Placement
from dsrun.runtime.precision import Precision
from dsrun.runtime.strategies.reduction import GradReduction, ddp_averaging_hook


@dataclass(frozen=True)
class StrategyContext:
    placement: Placement
    precision: Precision
    stage: int
    reduce_bucket_elements: int  # gradient reduction bucket (stage 2), in elements
    gather_bucket_elements: int  # parameter all-gather bucket (stages 1-2), in elements
    unit_elements: int  # stage 3: most parameter elements gathered together (stage3_prefetch_bucket_size)
    ddp_bucket_cap_mb: float | None  # None: DDP's own default
    find_unused_parameters: bool  # zero_optimization.ignore_unused_parameters (DeepSpeed default: true)
    offload_cpu: bool  # offload_optimizer / offload_param with device "cpu"
    reduction: GradReduction  # the dtype and scaling of the gradient sum over ranks


class Strategy:
    """One ZeRO stage's mechanism. The engine calls, per micro-step: before_forward, (forward), after_backward;
    per optimizer step: grad_pairs, (norm, clip, optimizer.step), after_step, zero_grad."""

    module: nn.Module  # what forward runs through (DDP, FSDP2 or the plain model)
    sharded: bool  # owned grads are this rank's partition: a global norm needs a sum over ranks
    masters: dict[nn.Parameter, torch.Tensor]  # model parameter -> the tensor the optimizer updates for it

    def before_forward(self, boundary: bool) -> None:
        """`boundary`: this micro-step ends an accumulation cycle (its gradients must be synchronised)."""

    def after_backward(self, boundary: bool) -> None:
        """Gradients of this micro-step are complete."""

    def grad_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(master, its synchronised gradient) for every master that has one; the gradient keeps its own dtype
        (the engine converts it to the master's dtype chunk by chunk, so no full fp32 copy ever exists)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """The optimizer updated the masters: make the model's parameters match on every rank."""

    def after_load(self) -> None:
        """A checkpoint was loaded into the masters: make the model's parameters match on every rank."""
        self.after_step()

    def zero_grad(self) -> None:
        raise NotImplementedError


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def wrap_ddp(model: nn.Module, ctx: StrategyContext) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if ctx.placement.world_size == 1:
        return model  # nothing to synchronise; skip DDP's hooks
    kwargs = {"bucket_cap_mb": ctx.ddp_bucket_cap_mb} if ctx.ddp_bucket_cap_mb is not None else {}
    device = ctx.placement.device
    ddp = DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        gradient_as_bucket_view=True,  # otherwise DDP's buckets are a second full copy of the gradients
        # DeepSpeed tolerates parameters a forward does not use; DDP needs to look for them to do the same.
        find_unused_parameters=ctx.find_unused_parameters,
        **kwargs,
    )
    # Always ours: DDP's own hook divides before summing in the gradients' dtype; DeepSpeed's default (and so
    # dsrun's) divides after, and dsrun sums half-precision gradients in fp32.
    ddp.register_comm_hook(ctx.reduction, ddp_averaging_hook)
    return ddp


def set_grad_sync(module: nn.Module, boundary: bool) -> None:
    # What DDP.no_sync() toggles; the engine's forward and backward are separate calls, so no context manager.
    if hasattr(module, "require_backward_grad_sync"):
        module.require_backward_grad_sync = boundary
