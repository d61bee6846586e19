"""How gradients are averaged over the data-parallel ranks, from DeepSpeed's communication_data_type,
prescale_gradients and gradient_predivide_factor.

DeepSpeed's semantics: the sum runs in communication_data_type; with prescale_gradients each rank divides by the
world size before the sum, otherwise by gradient_predivide_factor before and by world / factor after. dsrun sums in
fp32 unless communication_data_type says otherwise (DeepSpeed's default is the training dtype), so half-precision
gradients lose nothing in the sum; a half-precision sum moves half the bytes, and the pre-division keeps it in range.
The one exception is the case where a bf16 sum gives exactly the fp32 sum's result (see grad_reduction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsrun.config.run_config import RunConfig

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

    def before_sum(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.div_(self.pre_factor) if self.pre_factor != 1 else flat

    def after_sum(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.div_(self.post_factor) if self.post_factor != 1 else flat


def grad_reduction(cfg: RunConfig, world: int, grad_dtype: torch.dtype, stage: int) -> GradReduction:
    """`grad_dtype`: the dtype of the gradients the strategy reduces (the module's parameters' dtype)."""
    pre = float(world) if cfg.prescale_gradients else float(cfg.gradient_predivide_factor)
    if cfg.communication_data_type:
        dtype = DTYPES[cfg.communication_data_type]
    elif world == 2 and grad_dtype == torch.bfloat16 and stage in (0, 1) and pre == 1:
        # Two ranks: each element of the sum is one addition, and it is written back into the bf16 gradients, so
        # it is rounded once either way (the fp32 sum of two bf16 values is exact, or the smaller one is below half a
        # bf16 step of the larger); a bf16 sum gives the same bits (subnormals and the top of the range aside;
        # halving is exact) with half the bytes. Not with more ranks (each partial sum would be rounded), not for
        # fp16 (a + b may overflow where (a + b) / 2 does not), not at stage 2 (each micro-step's sum is added to
        # the shard accumulated so far: a second rounding), not at stage 3 (FSDP2 keeps the reduced gradients in
        # the reduce dtype).
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
    return GradReduction(dtype=dtype, pre_factor=pre, world=world)
