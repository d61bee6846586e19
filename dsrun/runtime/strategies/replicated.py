"""ZeRO stage 0: every rank holds everything; gradients are averaged once per accumulation cycle (FlatGrads; LocalGrads
when no other rank shares them)."""

from __future__ import annotations

import torch
from torch import nn

from dsrun.runtime.strategies.base import (
    Strategy,
    StrategyContext,
    broadcast_from_rank0,
    broadcast_tensor,
    trainable,
)
from dsrun.runtime.strategies.experts import split_experts
from dsrun.runtime.strategies.flat_grads import FlatGrads
from dsrun.runtime.strategies.local_grads import LocalGrads


class Replicated(Strategy):
    sharded = False

    def __init__(self, model: nn.Module, ctx: StrategyContext):
        self.params = trainable(model)
        dense, experts = split_experts(self.params)
        if ctx.placement.world_size > 1:
            broadcast_from_rank0(model, ctx.placement.device, ctx.group,
                                 skip={id(p) for group in experts for p in group.params})
            for group in experts:  # each expert's copies start from its first copy's
                with torch.no_grad():
                    for param in group.params:
                        broadcast_tensor(param, ctx.placement.device, group.data_group, 0)
        self.module = model
        names = {p: name for name, p in model.named_parameters()}
        # One flat buffer set for the dense parameters (averaged over all ranks), one per expert group: summed over
        # the expert's copies and divided by the whole world (the reduction's `world`), see experts.py. With no
        # other replica there is nothing to average: autograd's own gradients (experts too: ep_size is 1 then).
        self.grad_sets: list[FlatGrads | LocalGrads]
        if ctx.reduction.world == 1:
            self.grad_sets = [LocalGrads(self.params, names, ctx.allow_unused)]
        else:
            self.grad_sets = [FlatGrads(dense, names, ctx.reduction, ctx.reduce_bucket_elements, ctx.allow_unused,
                                        ctx.group)]
            self.grad_sets += [FlatGrads(group.params, names, ctx.reduction, ctx.reduce_bucket_elements,
                                         ctx.allow_unused, group.data_group) for group in experts]
        self.experts = experts
        # Half-precision modules get fp32 master copies; fp32 modules are stepped directly.
        separate = ctx.precision.master_weights
        self.masters = {p: p.detach().float().clone() if separate else p for p in self.params}

    def before_backward(self, boundary: bool) -> None:
        for grads in self.grad_sets:
            grads.attach()

    def after_backward(self, boundary: bool) -> None:
        if boundary:
            for grads in self.grad_sets:
                grads.average()

    def catch_up(self) -> None:
        for grads in self.grad_sets:
            grads.catch_up()

    def grad_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(master, param.grad) for param, master in self.masters.items() if param.grad is not None]

    def after_step(self) -> None:
        with torch.no_grad():
            for param, master in self.masters.items():
                if master is not param:
                    param.copy_(master)

    def zero_grad(self) -> None:
        for param, master in self.masters.items():
            if master is not param:
                master.grad = None
        for grads in self.grad_sets:
            grads.zero()
