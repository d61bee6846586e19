"""ZeRO stages as strategies: 0 replicated (flat-buffer all-reduce), 1-2 row-sharded optimizer, 3 FSDP2."""

from __future__ import annotations

from torch import nn

from dsrun.runtime.strategies.base import Strategy, StrategyContext


def make_strategy(model: nn.Module, ctx: StrategyContext) -> Strategy:
    if ctx.stage == 0:
        from dsrun.runtime.strategies.replicated import Replicated

        return Replicated(model, ctx)
    if ctx.stage in (1, 2):
        from dsrun.runtime.strategies.sharded import Sharded

        return Sharded(model, ctx)
    from dsrun.runtime.strategies.fully_sharded import FullySharded

    return FullySharded(model, ctx)


__all__ = ["Strategy", "StrategyContext", "make_strategy"]
