"""Apply a plan with PyTorch's tensor parallelism: ColwiseParallel / RowwiseParallel on a replica's 1-D tp mesh.

GPT-2's projections are `Conv1D` (y = x @ W + b, W stored as in x out), which torch's parallel styles do not know;
they become nn.Linear with the transposed weight first, the same function. Its fused c_attn computes [q | k | v]
in one matrix: split by columns as is, rank 0 would get all of q and half of k. Its output rows are first reordered
to [q_0 k_0 v_0 | q_1 k_1 v_1 | ...] (q_r: rank r's heads), so that the column-wise split hands every rank the
q, k and v of the same heads, and the module's split of the fused output is resized to the local width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel, parallelize_module

from dsrun.errors import UsageError
from dsrun.inference.plans import COLWISE, FUSED_QKV, Plan


@dataclass(frozen=True)
class Relayout:
    """How a tensor as saved becomes the layout of the model's (whole, unsplit) parameter: transposed (Conv1D's
    in x out weight), then its rows taken in `order` (the fused qkv regrouped). Kept as data, not a function, so a
    reader can also map a rank's part back to the saved rows and columns it comes from (file_shards)."""

    transposed: bool
    order: torch.Tensor | None = None

    def __call__(self, saved: torch.Tensor) -> torch.Tensor:
        whole = saved.t() if self.transposed else saved
        return whole if self.order is None else whole[self.order]


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor)


def as_linear(module: nn.Module) -> nn.Linear:
    """A Hugging Face Conv1D as the nn.Linear computing the same function (weight transposed)."""
    if isinstance(module, nn.Linear):
        return module
    if not _is_conv1d(module):
        raise UsageError(f"{type(module).__name__} is not a linear layer: tensor parallelism splits nn.Linear (and"
                         " GPT-2's Conv1D) only")
    weight = cast(torch.Tensor, module.weight).detach()
    bias = getattr(module, "bias", None)
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None, device=weight.device,
                       dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.t())
        if bias is not None:
            linear.bias.copy_(bias.detach())
    return linear


def _heads_by_rank(rows: int, tp_size: int) -> torch.Tensor:
    """Row order putting each rank's thirds of a fused [q | k | v] output together."""
    width = rows // 3
    share = width // tp_size
    order = [third * width + rank * share + i for rank in range(tp_size) for third in range(3) for i in range(share)]
    return torch.tensor(order)


def _regroup_fused_qkv(linear: nn.Linear, tp_size: int) -> None:
    order = _heads_by_rank(linear.out_features, tp_size).to(linear.weight.device)
    with torch.no_grad():
        linear.weight.copy_(linear.weight[order])
        if linear.bias is not None:
            linear.bias.copy_(linear.bias[order])


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _localise_heads(plan: Plan, tp_size: int) -> None:
    """Attention modules that keep head counts or widths as attributes run on their local heads."""
    for block in plan.attention:
        module = block.module
        for attr, total in (("num_heads", block.heads), ("num_attention_heads", block.heads),
                            ("num_key_value_heads", block.kv_heads), ("num_kv_heads", block.kv_heads)):
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, total // tp_size)
        for attr in ("embed_dim", "split_size", "hidden_size"):  # GPT-2: the width of q, of k and of v
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(module, attr, value // tp_size)


def _broadcast_whole(model: nn.Module, mesh: DeviceMesh) -> None:
    """The parameters and buffers left whole take rank 0's values, as the split ones do (parallelize_module scatters
    rank 0's): a model initialised differently on each rank (built from a config without a seed) then runs as rank
    0's model everywhere, instead of each rank mixing its own embeddings with rank 0's split layers."""
    group = mesh.get_group()
    source = dist.get_global_rank(group, 0)
    seen: set[int] = set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if isinstance(tensor, DTensor) or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        dist.broadcast(tensor.data, src=source, group=group)


def apply(model: nn.Module, plan: Plan, mesh: DeviceMesh, *, on_meta: bool = False) -> dict[str, Relayout]:
    """Split the model's layers as planned. Returns, for each weight whose layout the split changed, how to turn the
    saved tensor into the split one's (whole) layout. `on_meta`: the model has no values yet; each rank only cuts
    out its part (no scatter from rank 0, no broadcast)."""
    tp_size = mesh.size()
    styles: dict[str, ParallelStyle] = {}
    relayouts: dict[str, Relayout] = {}
    for name, style in plan.styles.items():
        module = model.get_submodule(name)
        linear = as_linear(module)
        if linear is not module:
            _replace(model, name, linear)
            relayouts[f"{name}.weight"] = Relayout(transposed=True)
        if style == FUSED_QKV:
            order = _heads_by_rank(linear.out_features, tp_size)
            _regroup_fused_qkv(linear, tp_size)
            relayouts[f"{name}.weight"] = Relayout(transposed=linear is not module, order=order)
            if linear.bias is not None:
                relayouts[f"{name}.bias"] = Relayout(transposed=False, order=order)
        styles[name] = ColwiseParallel() if style in (COLWISE, FUSED_QKV) else RowwiseParallel()
    # Off meta each split weight is rank 0's, scattered (src_data_rank=0); the whole ones are broadcast to match.
    parallelize_module(model, mesh, styles, src_data_rank=None if on_meta else 0)
    if not on_meta:
        _broadcast_whole(model, mesh)
    _localise_heads(plan, tp_size)
    return relayouts
