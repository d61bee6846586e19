"""How gradients are averaged over the data-parallel ranks, from DeepSpeed's communication_data_type,
prescale_gradients and gradient_predivide_factor.

DeepSpeed's semantics: the sum runs in communication_data_type; with prescale_gradients each rank divides by the
world size before the sum, otherwise by gradient_predivide_factor before and by world / factor after. dsrun sums in
fp32 unless communication_data_type says otherwise (DeepSpeed's default is the training dtype), so half-precision
gradients lose nothing in the sum; a half-precision sum moves half the bytes, and the pre-division keeps it in range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class GradReduction:
    dtype: torch.dtype  # the dtype the sum over ranks runs in
    pre_factor: float  # each rank's gradients are divided by this before the sum...
    world: int

    @property
    def post_factor(self) -> float:
        """...and the sum by this after, so the result is the mean."""
        return self.world / self.pre_factor


def grad_reduction(cfg, world: int) -> GradReduction:
    dtype = DTYPES[cfg.communication_data_type] if cfg.communication_data_type else torch.float32
    pre = float(world) if cfg.prescale_gradients else float(cfg.gradient_predivide_factor)
    return GradReduction(dtype=dtype, pre_factor=pre, world=world)


def ddp_averaging_hook(reduction: GradReduction, bucket):
    """DDP comm hook: average one bucket as `reduction` says (DDP's own hook divides first and sums in the
    gradients' dtype). The sum is in its own buffer when the dtypes differ, then copied back into the bucket."""
    buffer = bucket.buffer()
    work = buffer.to(reduction.dtype)  # the bucket itself when the dtype already matches
    if reduction.pre_factor != 1:
        work.div_(reduction.pre_factor)
    future = dist.all_reduce(work, async_op=True).get_future()

    def finish(fut):
        total = fut.value()[0]
        if reduction.post_factor != 1:
            total.div_(reduction.post_factor)
        return total if total is buffer else buffer.copy_(total)

    return future.then(finish)
