"""Gradients that no other rank shares: a one-rank world, or a pipeline stage with one data-parallel replica.

There is nothing to average, so the flat buffers FlatGrads keeps for its collectives would only cost a memset of
every gradient per step and an accumulation into zeros where autograd can hand over its own tensor (measured on the
pipeline benchmark: about 3% of a batch). The gradients stay where autograd puts them. What FlatGrads promises
stays true: a parameter no forward of the cycle used is stepped with a zero gradient (DeepSpeed's stages 0-2 do),
or is an error when zero_optimization.ignore_unused_parameters is false.
"""

from __future__ import annotations

import torch
from torch import nn

from dsrun.runtime.strategies.base import refuse_unused


class LocalGrads:
    def __init__(self, params: list[nn.Parameter], names: dict[nn.Parameter, str], allow_unused: bool):
        self.params = params
        self.names = names
        self.allow_unused = allow_unused

    def attach(self) -> None:
        """Nothing to point anywhere: autograd's own `.grad` is the gradient."""

    def average(self) -> None:
        """At the end of a cycle: a gradient for every parameter, zeros where no forward used it."""
        unused = [p for p in self.params if p.grad is None]
        if not self.allow_unused:
            refuse_unused([self.names[p] for p in unused])
        for param in unused:
            param.grad = torch.zeros_like(param)

    def catch_up(self) -> None:
        self.average()

    def zero(self) -> None:
        for param in self.params:
            param.grad = None
