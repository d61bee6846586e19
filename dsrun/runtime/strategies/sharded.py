"""ZeRO stages 1 and 2 on replicated parameters: each rank owns a row shard of every parameter.

Stage 1: the full gradients are averaged at the end of an accumulation cycle (FlatGrads); each rank steps its rows
         only (optimizer state and fp32 master weights: 1/N each), then the updated rows are gathered.
Stage 2: after every backward the gradients are reduced and each rank keeps only its rows, accumulated in
         fp32; the full gradients are freed at once, so they never outlive a micro-step.
Which collective does the reducing and gathering is chosen per backend (collectives.py).
"""

from __future__ import annotations

import torch
from torch import nn

from dsrun.runtime.strategies.base import (
    Strategy,
    StrategyContext,
    broadcast_from_rank0,
    refuse_unused,
    trainable,
)
from dsrun.runtime.strategies.collectives import gather_shards, reduce_to_shard
from dsrun.runtime.strategies.flat_grads import FlatGrads
from dsrun.runtime.strategies.layout import as_rows, make_buckets, row_range


class Sharded(Strategy):
    sharded = True

    def __init__(self, model: nn.Module, ctx: StrategyContext):
        self.ctx = ctx
        self.rank, self.world = ctx.placement.rank, ctx.placement.world_size
        self.params = trainable(model)
        self.rows = {p: row_range(as_rows(p).shape[0], self.world, self.rank) for p in self.params}
        self.names = {p: name for name, p in model.named_parameters()}
        self.gather_buckets = make_buckets(self.params, self.world, ctx.gather_bucket_elements)
        self.module = model
        if self.world > 1:
            broadcast_from_rank0(model, ctx.placement.device, ctx.group)
        if ctx.stage == 1:
            self.grads = FlatGrads(self.params, self.names, ctx.reduction, ctx.reduce_bucket_elements,
                                   ctx.allow_unused, ctx.group)
        else:
            self.reduce_buckets = make_buckets(self.params, self.world, ctx.reduce_bucket_elements)
            self.accumulated: dict[nn.Parameter, torch.Tensor | None] = dict.fromkeys(self.params)
        # After the broadcast, so every rank's masters start from rank 0's parameters.
        # With offload_optimizer the masters (and so the optimizer state) live in CPU memory.
        master_device = torch.device("cpu") if ctx.offload_cpu else ctx.placement.device
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

    def before_backward(self, boundary: bool) -> None:
        if self.ctx.stage == 1:
            self.grads.attach()

    def after_backward(self, boundary: bool) -> None:
        if self.ctx.stage == 2:
            self._reduce_into_shards()
        elif boundary:
            self.grads.average()

    def _reduce_into_shards(self) -> None:
        device, reduction = self.ctx.placement.device, self.ctx.reduction
        for bucket in self.reduce_buckets:
            # Every rank reduces every bucket: whether a parameter got a gradient is a local fact (a branch one
            # rank did not take), and skipping on local facts would pair up different collectives across ranks.
            if not self.ctx.allow_unused:
                refuse_unused([self.names[p] for p in bucket.params if p.grad is None])
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in bucket.params]
            packed = torch.empty(self.world * bucket.segment, dtype=reduction.dtype, device=device)
            packed = reduction.before_sum(bucket.pack(grads, self.world, packed))
            mine = reduction.after_sum(reduce_to_shard(packed, bucket.segment, self.rank, self.world, self.ctx.group))
            offset = 0
            for i, param in enumerate(bucket.params):
                n = bucket.numel_of(i, self.rank)
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
            self.grads.catch_up()
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
            for bucket in self.gather_buckets:
                mine = torch.empty(bucket.segment, dtype=dtype, device=self.ctx.placement.device)
                bucket.segment_of([self.masters[p] for p in bucket.params], self.rank, mine)
                bucket.unpack_into_params(gather_shards(mine, self.rank, self.world, self.ctx.group), self.world)

    def zero_grad(self) -> None:
        for master in self.masters.values():
            master.grad = None
        if self.ctx.stage == 2:
            for param in self.params:
                param.grad = None
            self.accumulated = dict.fromkeys(self.params)
        else:
            self.grads.zero()
