"""ZeRO stage 0: every rank holds everything; DDP all-reduces gradients once per accumulation cycle."""

from __future__ import annotations

import torch
from torch import nn

from dsrun.runtime.strategies.base import Strategy, StrategyContext, set_grad_sync, trainable, wrap_ddp


class Replicated(Strategy):
    sharded = False

    def __init__(self, model: nn.Module, ctx: StrategyContext):
        self.params = trainable(model)
        self.module = wrap_ddp(model, ctx)  # DDP first: it gives every rank rank 0's parameters
        # Half-precision modules get fp32 master copies; fp32 modules are stepped directly.
        separate = ctx.precision.master_weights
        self.masters = {p: p.detach().float().clone() if separate else p for p in self.params}

    def before_forward(self, boundary: bool) -> None:
        set_grad_sync(self.module, boundary)

    def grad_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(master, param.grad) for param, master in self.masters.items() if param.grad is not None]

    def after_step(self) -> None:
        with torch.no_grad():
            for param, master in self.masters.items():
                if master is not param:
                    param.copy_(master)

    def zero_grad(self) -> None:
        for param, master in self.masters.items():
            param.grad = None
            master.grad = None
