"""After the split, run the split layers on plain local tensors: a column-wise layer is an nn.Linear of this rank's
rows, a row-wise one an nn.Linear of its columns followed by one in-place all-reduce of its output over the
tensor-parallel group (and the whole bias added after it, once).

Why not keep the DTensors for the forward: every op on a DTensor goes through its Python dispatch (sharding
propagation, redistribution, wrapping the output). Decoding one token at a time, that costs more than the matrix
products themselves: measured on a 8-layer Llama at tp 2 on CPU, PythonSubclass + Redistribute + FromTorchTensor
took about a third of a token's time. The DTensors stay the way weights are placed and loaded (the split, reading a
checkpoint's byte ranges); once the values are in, the same numbers run as ordinary modules.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from dsrun.inference.plans import ROWWISE, Plan


class RowParallelLinear(nn.Linear):
    """y = all_reduce(x_local @ W_local^T) + b: x holds this rank's slice of the features (the column-wise layers
    before it produced exactly that slice), W_local the matching columns of the weight, b the whole bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: dist.ProcessGroup):
        super().__init__(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta", dtype=weight.dtype)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_parameter("bias", nn.Parameter(bias, requires_grad=False) if bias is not None else None)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.linear(x, self.weight)
        dist.all_reduce(out, group=self.group)
        return out if self.bias is None else out + self.bias


def _local(param: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter's values on this rank, as a plain tensor."""
    if param is None:
        return None
    return param.to_local() if isinstance(param, DTensor) else param.data


def _plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta", dtype=weight.dtype)
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=False)
    return linear


def run_locally(model: nn.Module, plan: Plan, group: dist.ProcessGroup) -> None:
    """Replace every split layer (an nn.Linear holding DTensors, with the parallel style's hooks) by a module of its
    local values, which drops the hooks with it."""
    for name, style in plan.styles.items():
        module = model.get_submodule(name)
        weight, bias = _local(module.get_parameter("weight")), _local(getattr(module, "bias", None))
        assert weight is not None
        new = RowParallelLinear(weight, bias, group) if style == ROWWISE else _plain_linear(weight, bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
