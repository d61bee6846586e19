"""ZeRO stages 1 and 2 on replicated parameters: each rank owns a row shard of every parameter.

Stage 1: the full gradients are averaged at the end of an accumulation cycle (FlatGrads); each rank steps its rows
         only (optimizer state and fp32 master weights: 1/N each), then the updated rows are gathered.
Stage 2: after every backward the gradients are reduced and each rank keeps only its rows, accumulated in
         fp32; the full gradients are freed at once, so they never outlive a micro-step.
Which collective does the reducing and gathering is chosen per backend (collectives.py).

The rows are shared among the ranks that hold the same parameter: all data-parallel ranks for dense parameters, the
expert-data-parallel group for MoE experts spread over ranks (ep_size > 1; see experts.py for their gradient scale).
Each such set of parameters is a ShardGroup with its own ranks, rows and buckets.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from dsrun.runtime.strategies.base import (
    Strategy,
    StrategyContext,
    broadcast_from_rank0,
    broadcast_tensor,
    refuse_unused,
    trainable,
)
from dsrun.runtime.strategies.collectives import gather_shards, reduce_to_shard
from dsrun.runtime.strategies.experts import split_experts
from dsrun.runtime.strategies.flat_grads import FlatGrads
from dsrun.runtime.strategies.layout import as_rows, make_buckets, row_range


class ShardGroup:
    """Parameters whose rows are spread over the same ranks: `group` (None: the strategy's data-parallel ranks),
    of which this rank is number `rank` of `world`."""

    def __init__(self, params: list[nn.Parameter], group: dist.ProcessGroup | None, rank: int, world: int,
                 ctx: StrategyContext, names: dict[nn.Parameter, str]):
        self.params, self.group, self.rank, self.world = params, group, rank, world
        self.rows = {p: row_range(as_rows(p).shape[0], world, rank) for p in params}
        self.gather_buckets = make_buckets(params, world, ctx.gather_bucket_elements)
        if ctx.stage == 1:
            self.grads = FlatGrads(params, names, ctx.reduction, ctx.reduce_bucket_elements, ctx.allow_unused, group)
        else:
            self.reduce_buckets = make_buckets(params, world, ctx.reduce_bucket_elements)


class Sharded(Strategy):
    sharded = True

    def __init__(self, model: nn.Module, ctx: StrategyContext):
        self.ctx = ctx
        self.params = trainable(model)
        self.names = {p: name for name, p in model.named_parameters()}
        dense, experts = split_experts(self.params)
        placement = ctx.placement
        if placement.world_size > 1:
            broadcast_from_rank0(model, placement.device, ctx.group,
                                 skip={id(p) for group in experts for p in group.params})
            for expert_group in experts:  # each expert's copies start from its first copy's
                with torch.no_grad():
                    for param in expert_group.params:
                        broadcast_tensor(param, placement.device, expert_group.data_group, 0)
        self.groups = [ShardGroup(dense, ctx.group, placement.rank, placement.world_size, ctx, self.names)]
        self.groups += [ShardGroup(g.params, g.data_group, dist.get_rank(g.data_group),
                                   dist.get_world_size(g.data_group), ctx, self.names) for g in experts]
        self.experts = experts
        self.group_of = {p: group for group in self.groups for p in group.params}
        self.rows = {p: rows for group in self.groups for p, rows in group.rows.items()}
        self.module = model
        if ctx.stage == 2:
            self.accumulated: dict[nn.Parameter, torch.Tensor | None] = dict.fromkeys(self.params)
        # After the broadcast, so every rank's masters start from rank 0's parameters.
        # With offload_optimizer the masters (and so the optimizer state) live in CPU memory.
        master_device = torch.device("cpu") if ctx.offload_cpu else placement.device
        self.masters = {}
        for param in self.params:
            start, end = self.rows[param]
            shard = as_rows(param.detach())[start:end]
            if ctx.precision.master_weights or shard.device != master_device:
                master = shard.to(device=master_device, dtype=torch.float32, copy=True)
                # Pinned CPU masters (offload pin_memory, with CUDA) make the per-step copies to the GPU faster.
                self.masters[param] = master.pin_memory() if ctx.offload_pinned else master
            else:  # the master *is* the parameter's rows (a view): the step updates the model in place
                self.masters[param] = shard

    def shard_group(self, param: nn.Parameter) -> tuple[dist.ProcessGroup | None, int]:
        """The ranks `param`'s rows are spread over (None: the data-parallel ranks) and how many they are."""
        group = self.group_of[param]
        return group.group, group.world

    def spreads_rows(self) -> bool:
        return any(group.world > 1 for group in self.groups)  # the groups' sizes are the same on every rank

    def before_backward(self, boundary: bool) -> None:
        if self.ctx.stage == 1:
            for group in self.groups:
                group.grads.attach()

    def after_backward(self, boundary: bool) -> None:
        if self.ctx.stage == 2:
            self._reduce_into_shards()
        elif boundary:
            for group in self.groups:
                group.grads.average()

    def _reduce_into_shards(self) -> None:
        for group in self.groups:
            for bucket in group.reduce_buckets:
                self._reduce_bucket(group, bucket)

    def _reduce_bucket(self, group: ShardGroup, bucket) -> None:
        device, reduction = self.ctx.placement.device, self.ctx.reduction
        # Every rank reduces every bucket: whether a parameter got a gradient is a local fact (a branch one rank did
        # not take), and skipping on local facts would pair up different collectives across ranks.
        if not self.ctx.allow_unused:
            refuse_unused([self.names[p] for p in bucket.params if p.grad is None])
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in bucket.params]
        packed = torch.empty(group.world * bucket.segment, dtype=reduction.dtype, device=device)
        packed = reduction.before_sum(bucket.pack(grads, group.world, packed))
        # after_sum divides by the whole data-parallel world, also for experts (see experts.py).
        mine = reduction.after_sum(reduce_to_shard(packed, bucket.segment, group.rank, group.world, group.group))
        offset = 0
        for i, param in enumerate(bucket.params):
            n = bucket.numel_of(i, group.rank)
            piece = mine[offset : offset + n].view_as(self.masters[param])
            offset += n
            # Reduced in fp32 (unless configured otherwise), kept in the parameters' dtype (DeepSpeed's
            # grad_accum_dtype default): a shard of half gradients is what ZeRO-2's 2Ψ/N accounts for.
            sofar = self.accumulated[param]
            if sofar is None:
                self.accumulated[param] = piece.to(param.dtype, copy=True)
            else:
                sofar.add_(piece)
            param.grad = None  # the full gradient is done with: free it now

    def catch_up(self) -> None:
        if self.ctx.stage == 1:
            for group in self.groups:
                group.grads.catch_up()
        else:  # the cycle's gradients accumulated whole in .grad: reduce them into the shards once
            self._reduce_into_shards()

    def grad_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pairs = []
        for param, master in self.masters.items():
            if self.ctx.stage == 2:
                grad = self.accumulated[param]
            elif param.grad is None:
                grad = None
            else:
                start, end = self.rows[param]
                grad = as_rows(param.grad)[start:end]
            if grad is not None:
                pairs.append((master, grad))
        return pairs

    def after_step(self) -> None:
        dtype = self.ctx.precision.param_dtype
        with torch.no_grad():
            for group in self.groups:
                for bucket in group.gather_buckets:
                    mine = torch.empty(bucket.segment, dtype=dtype, device=self.ctx.placement.device)
                    bucket.segment_of([self.masters[p] for p in bucket.params], group.rank, mine)
                    gathered = gather_shards(mine, group.rank, group.world, group.group)
                    bucket.unpack_into_params(gathered, group.world)

    def zero_grad(self) -> None:
        for master in self.masters.values():
            master.grad = None
        if self.ctx.stage == 2:
            for param in self.params:
                param.grad = None
            self.accumulated = dict.fromkeys(self.params)
        else:
            for group in self.groups:
                group.grads.zero()
