"""ZeRO stage 0: every rank holds everything; gradients are averaged once per accumulation cycle (FlatGrads)."""

from __future__ import annotations

import torch
from torch import nn

from dsrun.runtime.strategies.base import Strategy, StrategyContext, broadcast_from_rank0, trainable
from dsrun.runtime.strategies.flat_grads import FlatGrads


class Replicated(Strategy):
    sharded = False

    def __init__(self, model: nn.Module, ctx: StrategyContext):
        self.params = trainable(model)
        if ctx.placement.world_size > 1:
            broadcast_from_rank0(model, ctx.placement.device, ctx.group)
        self.module = model
        names = {p: name for name, p in model.named_parameters()}
        self.grads = FlatGrads(self.params, names, ctx.reduction, ctx.reduce_bucket_elements, ctx.allow_unused,
                               ctx.group)
        # Half-precision modules get fp32 master copies; fp32 modules are stepped directly.
        separate = ctx.precision.master_weights
        self.masters = {p: p.detach().float().clone() if separate else p for p in self.params}

    def before_backward(self, boundary: bool) -> None:
        self.grads.attach()

    def after_backward(self, boundary: bool) -> None:
        if boundary:
            self.grads.average()

    def catch_up(self) -> None:
        self.grads.catch_up()

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
        self.grads.zero()
