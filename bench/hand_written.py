"""The baseline dsrun is measured against: each ZeRO stage written by hand with torch's own building blocks.

    stage 0  DDP(gradient_as_bucket_view=True), no_sync() while accumulating
    stage 1  the same DDP + torch.distributed.optim.ZeroRedundancyOptimizer
    stage 2  FSDP2 fully_shard per block and root, reshard_after_forward=False
    stage 3  FSDP2 fully_shard per block and root, reshard_after_forward=True

bf16 uses the usual mixed-precision setup of each: DDP and ZeRO-1 get a bf16 module (DDP all-reduces bf16
gradients) and fp32 master weights that the optimizer steps; FSDP2 keeps fp32 shards and computes in bf16 through a
MixedPrecisionPolicy that reduces in fp32. FSDP2 reduce-scatters after every backward (sharded gradient
accumulation), which is what ZeRO-2 and ZeRO-3 promise and what dsrun and DeepSpeed do.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from bench.models import lm_loss
from bench.train_setup import ACCUMULATION, CLIP, adamw_options
from dsrun.runtime.memory import model_state_bytes


def clip_fp32_(grads: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ with the norm summed in fp32: torch's own takes bf16 norms of bf16 gradients, a 0.4% error
    that would show up as a loss difference that is not dsrun's."""
    norm = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)).norm()
    torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0).to(grads[0].dtype))


class MasterWeightAdamW(torch.optim.Optimizer):
    """AdamW on fp32 copies of half-precision parameters; the updated copies are written back after each step.

    Given to ZeroRedundancyOptimizer as its optimizer class, it is built on this rank's partition only, so the fp32
    copies and the Adam moments are 1/N each, as ZeRO-1 with mixed precision has them.
    """

    def __init__(self, params, **options):
        super().__init__(params, options)
        self.masters = {p: p.detach().float().clone() for g in self.param_groups for p in g["params"]}
        self.inner = torch.optim.AdamW(list(self.masters.values()), **options)

    @torch.no_grad()
    def step(self, closure=None):
        for param, master in self.masters.items():
            master.grad = param.grad.float() if param.grad is not None else None
        self.inner.step()
        torch._foreach_copy_(list(self.masters), list(self.masters.values()))
        for master in self.masters.values():
            master.grad = None


class _HandTrainer:
    name = "hand"

    def __init__(self):
        self.track_model_state = False
        self.model_state: dict | None = None

    def step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        losses = []
        for index, (tokens, targets) in enumerate(micro):
            with self._sync_context(last=index == len(micro) - 1):
                loss = lm_loss(self.module(tokens), targets)
                (loss / ACCUMULATION).backward()
            losses.append(loss.detach())
        self._update()
        return losses

    def _sync_context(self, last: bool):
        return contextlib.nullcontext()

    def _record(self, masters: dict, optimizer, grads=()) -> None:
        if self.track_model_state:
            self.model_state = model_state_bytes(self.model, masters, optimizer, grads=grads)


class DDPTrainer(_HandTrainer):
    """Stages 0 and 1: replicated parameters, gradients all-reduced by DDP once per accumulation cycle."""

    def __init__(self, model: nn.Module, stage: int, bf16: bool):
        super().__init__()
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel

        self.bf16 = bf16
        self.model = model.to(torch.bfloat16) if bf16 else model
        self.module = DistributedDataParallel(self.model, gradient_as_bucket_view=True)
        params = list(self.model.parameters())
        self.masters: dict = {}
        if stage == 1:
            cls = MasterWeightAdamW if bf16 else torch.optim.AdamW
            self.optimizer = ZeroRedundancyOptimizer(params, optimizer_class=cls, **adamw_options())
        elif bf16:
            self.masters = {p: p.detach().float().clone() for p in params}
            self.optimizer = torch.optim.AdamW(list(self.masters.values()), **adamw_options())
        else:
            self.optimizer = torch.optim.AdamW(params, **adamw_options())
        self.stage = stage

    def _sync_context(self, last: bool):
        return contextlib.nullcontext() if last else self.module.no_sync()

    @torch.no_grad()
    def _update(self) -> None:
        params = list(self.model.parameters())
        grads = [p.grad for p in params]
        if self.stage == 1:
            clip_fp32_(grads, CLIP)  # every rank holds the full all-reduced gradients
            self.optimizer.step()
            local = self.optimizer.optim
            if self.bf16:
                self._record(local.masters, local.inner, grads)
            else:
                self._record({}, local, grads)
        elif self.bf16:
            for param, master in self.masters.items():
                master.grad = param.grad.float()
            torch.nn.utils.clip_grad_norm_(list(self.masters.values()), CLIP)
            self.optimizer.step()
            self._record(self.masters, self.optimizer, grads)
            torch._foreach_copy_(params, list(self.masters.values()))
            for master in self.masters.values():
                master.grad = None
        else:
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            self.optimizer.step()
            self._record({}, self.optimizer)
        for param in params:
            param.grad = None


class FSDPTrainer(_HandTrainer):
    """Stages 2 and 3: FSDP2 shards parameters, gradients and optimizer state; they differ in whether a block's
    parameters are freed after its forward (3) or kept gathered until its backward is done (2)."""

    def __init__(self, model: nn.Module, stage: int, bf16: bool):
        super().__init__()
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
            MixedPrecisionPolicy()
        options = {"mesh": mesh, "reshard_after_forward": stage == 3, "mp_policy": policy}
        for block in model.blocks:
            fully_shard(block, **options)
        fully_shard(model, **options)
        self.model = self.module = model
        self.optimizer = torch.optim.AdamW(model.parameters(), **adamw_options())

    def _update(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.optimizer.step()
        self._record({}, self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)


def hand_trainer(model: nn.Module, stage: int, precision: str) -> _HandTrainer:
    bf16 = precision == "bf16"
    if stage in (0, 1):
        return DDPTrainer(model, stage, bf16)
    return FSDPTrainer(model, stage, bf16)
