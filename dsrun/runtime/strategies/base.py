"""What every ZeRO stage's strategy provides to the engine, and what it is given."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dsrun.runtime.distributed import Placement
from dsrun.runtime.precision import Precision
from dsrun.runtime.strategies.experts import ExpertGroup
from dsrun.runtime.strategies.reduction import GradReduction


@dataclass(frozen=True)
class StrategyContext:
    placement: Placement
    precision: Precision
    stage: int
    reduce_bucket_elements: int  # gradient reduction bucket (stages 0-2), in elements
    gather_bucket_elements: int  # parameter all-gather bucket (stages 1-2), in elements
    unit_elements: int  # stage 3: most parameter elements gathered together (stage3_prefetch_bucket_size)
    allow_unused: bool  # zero_optimization.ignore_unused_parameters (DeepSpeed default: true)
    offload_cpu: bool  # offload_optimizer / offload_param with device "cpu"
    offload_pinned: bool  # ... in pinned memory (their pin_memory, honoured with CUDA only: pinning needs a GPU)
    reduction: GradReduction  # the dtype and scaling of the gradient sum over ranks
    # The data-parallel ranks the strategy averages over; None: the whole world. A pipeline stage's strategy gets its
    # stage's replicas (and `placement` then counts within them).
    group: dist.ProcessGroup | None = None


class Strategy:
    """One ZeRO stage's mechanism. The engine calls, per micro-step: before_forward (only when the forward runs
    through the engine: scripts may call the bare module), (forward), before_backward, (backward), after_backward;
    per optimizer step: catch_up (only if no backward of the cycle ran through the engine), grad_pairs, (norm, clip,
    optimizer.step), after_step, zero_grad."""

    module: nn.Module  # what forward runs through (FSDP2's or the plain model)
    sharded: bool  # owned grads are this rank's partition: a global norm needs a sum over ranks
    masters: dict[nn.Parameter, torch.Tensor]  # model parameter -> the tensor the optimizer updates for it
    experts: list[ExpertGroup] = []  # MoE experts spread over ranks (ZeRO stage 0 only)

    def before_forward(self, boundary: bool) -> None:
        """`boundary`: this micro-step ends an accumulation cycle (its gradients must be synchronised)."""

    def before_backward(self, boundary: bool) -> None:
        """The engine is about to run this micro-step's backward."""

    def after_backward(self, boundary: bool) -> None:
        """Gradients of this micro-step are complete."""

    def catch_up(self) -> None:
        """At an update whose cycle ran no engine.backward (the script called loss.backward() itself): synchronise
        the gradients that backward left, as after_backward would have."""

    def grad_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(master, its synchronised gradient) for every master that has one; the gradient keeps its own dtype
        (the engine converts it to the master's dtype chunk by chunk, so no full fp32 copy ever exists)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """The optimizer updated the masters: make the model's parameters match on every rank."""

    def after_load(self) -> None:
        """A checkpoint was loaded into the masters: make the model's parameters match on every rank."""
        self.after_step()

    def zero_grad(self) -> None:
        raise NotImplementedError

    def shard_group(self, param: nn.Parameter) -> tuple[dist.ProcessGroup | None, int]:
        """The ranks whose row shards make up `param` (None: the data-parallel ranks) and how many they are; 1: this
        rank holds it whole (stage 0; or stage 3, where FSDP2 already holds it as a DTensor)."""
        return None, 1

    def spreads_rows(self) -> bool:
        """Whether any parameter is split into row shards over ranks (the same answer on every rank)."""
        return False


# Set on a model ZeRO stage 3 sharded: its settings, which a later initialize() on the same model must match.
STAGE3_SETTINGS = "_dsrun_stage3_settings"


def sharded_by_stage3(model: nn.Module) -> bool:
    return hasattr(model, STAGE3_SETTINGS)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def broadcast_from_rank0(model: nn.Module, device: torch.device, group: dist.ProcessGroup | None = None,
                         skip: set[int] | None = None) -> None:
    """Start every rank from rank 0's parameters and buffers, as DeepSpeed does at every stage: a script that sets
    no seed, or loads pretrained weights on rank 0 only, must not train a mix of each rank's weights.

    `device`: the process group's device. A tensor elsewhere (a stage-3 model still on the CPU, under NCCL) goes
    through a copy there, one tensor at a time. `group`: the ranks to agree (the first of them sends); None: all.
    `skip`: ids of tensors left alone (experts, which differ from rank to rank by design)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if skip and id(tensor) in skip:
                continue
            broadcast_tensor(tensor, device, group, 0)


def broadcast_tensor(tensor: torch.Tensor, device: torch.device, group: dist.ProcessGroup | None,
                     group_src: int) -> None:
    """`tensor` from the group's rank `group_src` to the others, through `device` if it lives elsewhere."""
    if tensor.device.type == device.type:
        dist.broadcast(tensor.data, group=group, group_src=group_src)
    else:
        staged = tensor.data.to(device)
        dist.broadcast(staged, group=group, group_src=group_src)
        tensor.data.copy_(staged)


def refuse_unused(unused: list[str]) -> None:
    """zero_optimization.ignore_unused_parameters false: parameters without a gradient are an error, as in DeepSpeed."""
    if unused:
        shown = ", ".join(unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
        raise RuntimeError(f"parameters received no gradient: {shown}; zero_optimization.ignore_unused_parameters is"
                           " false, which forbids that: set it to true (DeepSpeed's default) or use every parameter"
                           " in the forward")
