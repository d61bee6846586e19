"""How sharded stages split parameters among ranks: by rows (dim 0), in torch.chunk's sizes.

Rows keep every shard a contiguous view of its parameter (the fp32 optimizer can update the model in place), and
torch.chunk's sizes are the ones DTensor's Shard(0) uses, so a shard is also a valid DTensor local tensor for
torch.distributed.checkpoint. Every element belongs to exactly one rank, which balances the optimizer state to
within one row per parameter (whole-tensor partitioning, as in ZeroRedundancyOptimizer, can be far off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def row_range(rows: int, world: int, rank: int) -> tuple[int, int]:
    per_rank = math.ceil(rows / world) if rows else 0
    start = min(rank * per_rank, rows)
    return start, min(start + per_rank, rows)


def as_rows(tensor: torch.Tensor) -> torch.Tensor:
    """A view with a leading row dimension (a 0-d tensor becomes one row)."""
    return tensor.view(1) if tensor.dim() == 0 else tensor


@dataclass
class Bucket:
    """Parameters communicated together: every rank's rows of them, packed rank by rank, each padded to `segment`."""

    params: list[torch.nn.Parameter]
    ranges: list[list[tuple[int, int]]]  # ranges[i][r]: rows of params[i] owned by rank r
    segment: int  # elements per rank in the packed buffer (the largest rank's share)

    def numel_of(self, i: int, rank: int) -> int:
        start, end = self.ranges[i][rank]
        p = as_rows(self.params[i])
        return (end - start) * (p.numel() // max(p.shape[0], 1))

    def pack(self, tensors: list[torch.Tensor], world: int, out: torch.Tensor) -> torch.Tensor:
        """Write each rank's rows of `tensors` (shaped like params) into `out` ([world * segment]), rank by rank."""
        for rank in range(world):
            offset = rank * self.segment
            for i, tensor in enumerate(tensors):
                start, end = self.ranges[i][rank]
                n = self.numel_of(i, rank)
                out[offset : offset + n].copy_(as_rows(tensor)[start:end].reshape(-1))
                offset += n
            out[offset : (rank + 1) * self.segment].zero_()
        return out

    def unpack_into_params(self, flat: torch.Tensor, world: int) -> None:
        """Copy every rank's segment of `flat` back into the rows of the parameters."""
        for rank in range(world):
            offset = rank * self.segment
            for i, param in enumerate(self.params):
                start, end = self.ranges[i][rank]
                n = self.numel_of(i, rank)
                rows = as_rows(param.data)[start:end]
                rows.copy_(flat[offset : offset + n].view_as(rows))
                offset += n

    def segment_of(self, tensors: list[torch.Tensor], rank: int, out: torch.Tensor) -> torch.Tensor:
        """Pack this rank's own shards (already row slices) into `out` ([segment])."""
        offset = 0
        for i, tensor in enumerate(tensors):
            n = self.numel_of(i, rank)
            out[offset : offset + n].copy_(tensor.reshape(-1))
            offset += n
        out[offset:].zero_()
        return out


def make_buckets(params: list[torch.nn.Parameter], world: int, max_elements: int) -> list[Bucket]:
    """Group parameters (in order) into buckets of at most `max_elements` elements (a larger parameter goes alone)."""
    buckets: list[Bucket] = []
    current: list[torch.nn.Parameter] = []
    size = 0
    for param in params:
        if current and size + param.numel() > max_elements:
            buckets.append(_bucket(current, world))
            current, size = [], 0
        current.append(param)
        size += param.numel()
    if current:
        buckets.append(_bucket(current, world))
    return buckets


def _bucket(params: list[torch.nn.Parameter], world: int) -> Bucket:
    ranges = [[row_range(as_rows(p).shape[0], world, r) for r in range(world)] for p in params]
    bucket = Bucket(params, ranges, 0)
    bucket.segment = max(sum(bucket.numel_of(i, r) for i in range(len(params))) for r in range(world))
    return bucket
