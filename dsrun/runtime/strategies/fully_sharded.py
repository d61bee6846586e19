"""ZeRO stage 3 on FSDP2 (`fully_shard`): parameters, gradients and optimizer state all sharded.

Consecutive blocks (the entries of the model's ModuleLists/Sequentials) form FSDP units of at most
stage3_prefetch_bucket_size elements and the rest of the model is the root unit; parameters are gathered per unit
for forward and backward and resharded after forward. Half precision computes in bf16/fp16 while FSDP2 keeps the
sharded fp32 parameters (the master weights). Gradients are reduced in fp32 or in communication_data_type; FSDP2
averages in the collective itself, so prescale_gradients / gradient_predivide_factor have no say here.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

from dsrun.errors import UsageError
from dsrun.runtime.materialize import is_meta
from dsrun.runtime.strategies.base import (
    STAGE3_SETTINGS,
    Strategy,
    StrategyContext,
    broadcast_from_rank0,
    broadcast_tensor,
)
from dsrun.runtime.strategies.experts import ExpertGroup, split_experts


def block_runs(model: nn.Module, apart: frozenset[int] = frozenset()) -> list[list[nn.Module]]:
    """The layers to shard apart from the root: the entries holding parameters of each outermost
    ModuleList/Sequential, one list per container, in order.

    Those are the layers every forward runs. Other submodules stay in the root unit: FSDP2 issues one
    reduce-scatter per unit that ran, so a submodule one rank skips (a branch) would pair up different collectives
    across ranks; inside one unit an unused parameter just contributes a zero gradient.
    `apart`: ids of modules that are units of their own (MoE experts), neither blocks nor searched.
    """
    runs: list[list[nn.Module]] = []

    def take(container: nn.Module) -> None:
        blocks = [b for b in container.children() if id(b) not in apart and any(True for _ in b.parameters())]
        if blocks:
            runs.append(blocks)

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if id(child) in apart:
                continue
            if isinstance(child, (nn.ModuleList, nn.Sequential)):
                take(child)
            else:
                visit(child)

    if isinstance(model, (nn.ModuleList, nn.Sequential)):
        take(model)
    else:
        visit(model)
    return runs


def group_units(runs: list[list[nn.Module]], max_elements: int) -> list[list[nn.Module]]:
    """Consecutive blocks of one container grouped into units of at most `max_elements` parameter elements (a
    larger block is a unit by itself).

    Each unit costs one all-gather before its forward, one before its backward and one reduce-scatter, and on a
    small model the fixed cost of those collectives outweighs their size: 6 blocks of 0.8M parameters on gloo train
    ~12% faster as one unit than as six. The cap bounds the parameters gathered at once, as DeepSpeed's
    stage3_prefetch_bucket_size does.
    """
    units: list[list[nn.Module]] = []
    for run in runs:
        unit: list[nn.Module] = []
        size = 0
        for block in run:
            numel = sum(p.numel() for p in block.parameters())
            if unit and size + numel > max_elements:
                units.append(unit)
                unit, size = [], 0
            unit.append(block)
            size += numel
        units.append(unit)
    return units


def expert_modules(model: nn.Module, experts: list[ExpertGroup]) -> list[tuple[nn.Module, ExpertGroup]]:
    """The outermost modules holding only the experts of one expert group (an MoE layer's experts container):
    each becomes an FSDP2 unit over that group's expert-data-parallel ranks, apart from the dense units."""
    group_of = {id(p): group for group in experts for p in group.params}
    found: list[tuple[nn.Module, ExpertGroup]] = []

    def visit(module: nn.Module) -> None:
        groups = {id(group_of.get(id(p))) for p in module.parameters()}
        params = list(module.parameters())
        if params and len(groups) == 1 and id(params[0]) in group_of:
            found.append((module, group_of[id(params[0])]))
            return
        for child in module.children():
            visit(child)

    if experts:
        visit(model)
    return found


def _grad_mark(param: torch.Tensor):
    """Identifies the state of a parameter's gradient: it changes when a backward writes or adds to it."""
    grad = param.grad
    return None if grad is None else (id(grad), grad._version)


def _check_resharding(model: nn.Module, settings: tuple) -> None:
    """A model an earlier stage-3 engine sharded is used as it is (DeepSpeed's "initialize, load, initialize again"
    pattern); FSDP2 cannot shard it twice, so other settings than the first engine's would silently not apply."""
    first = getattr(model, STAGE3_SETTINGS, None)
    if first is None:
        raise UsageError("the model was already sharded with fully_shard outside dsrun: pass the unsharded model")
    if first != settings:
        names = ("world size", "compute dtype", "reduce dtype", "CPU offload", "stage3_prefetch_bucket_size")
        changed = ", ".join(f"{n} {a} -> {b}" for n, a, b in zip(names, first, settings, strict=True) if a != b)
        raise UsageError(f"the model was sharded by an earlier ZeRO stage 3 engine with other settings ({changed}):"
                         " build a fresh model for the new engine, or keep those settings")


class FullySharded(Strategy):
    sharded = True

    def __init__(self, model: nn.Module, ctx: StrategyContext):
        placement = ctx.placement
        names = {id(p): name for name, p in model.named_parameters()}
        originals = [p for p in model.parameters() if p.requires_grad]
        precision = ctx.precision
        settings = (placement.world_size, precision.param_dtype if precision.half else None, ctx.reduction.dtype,
                    ctx.offload_cpu, ctx.unit_elements)
        _, self.experts = split_experts(originals)
        expert_units = expert_modules(model, self.experts)
        units = group_units(block_runs(model, frozenset(id(m) for m, _ in expert_units)), ctx.unit_elements)
        if isinstance(model, FSDPModule):
            _check_resharding(model, settings)  # a second initialize() on the same model: keep its shards
        else:
            if placement.world_size > 1 and not is_meta(model):  # a meta model gets rank 0's values as it is made
                broadcast_from_rank0(model, ctx.placement.device,
                                     skip={id(p) for group in self.experts for p in group.params})
                for expert_group in self.experts:  # each expert's copies start from its first copy's
                    with torch.no_grad():
                        for param in expert_group.params:
                            broadcast_tensor(param, placement.device, expert_group.data_group, 0)
            mesh = init_device_mesh(placement.device.type, (placement.world_size,))
            mp_policy = MixedPrecisionPolicy(param_dtype=settings[1], reduce_dtype=ctx.reduction.dtype)
            offload = CPUOffloadPolicy(pin_memory=ctx.offload_pinned) if ctx.offload_cpu else OffloadPolicy()
            # Experts first (fully_shard nests from the inside out): each shared by its copies only.
            for module, expert_group in expert_units:
                expert_mesh = DeviceMesh.from_group(expert_group.data_group, placement.device.type)
                fully_shard(module, mesh=expert_mesh, reshard_after_forward=True, mp_policy=mp_policy,
                            offload_policy=offload)
            for unit in units:
                fully_shard(unit if len(unit) > 1 else unit[0], mesh=mesh, reshard_after_forward=True,
                            mp_policy=mp_policy, offload_policy=offload)
            fully_shard(model, mesh=mesh, reshard_after_forward=True, mp_policy=mp_policy, offload_policy=offload)
            setattr(model, STAGE3_SETTINGS, settings)
        # A parameter a rank's forward left unused still joins its unit's reduce-scatter, with a zero gradient: ranks
        # that took different branches then pair up the same collectives and average exactly, as stages 0-2
        # do. What that cannot mend is ranks running different blocks (a
        # layer skipped on some ranks only): their units' collectives no longer pair up, so after_backward compares
        # the blocks each rank ran. FSDP2 without the switch reduces only parameters that have gradients; then
        # after_backward compares those instead.
        self._zero_fills_unused = hasattr(model, "set_reduce_scatter_unused_params")
        if self._zero_fills_unused:
            cast(FSDPModule, model).set_reduce_scatter_unused_params(True)
        self._blocks = [block for unit in units for block in unit]
        self._ran: set[int] = set()  # ids of the blocks whose forward ran since the last backward
        if self._zero_fills_unused:  # otherwise the per-parameter comparison covers skipped blocks too
            for block in self._blocks:
                block.register_forward_pre_hook(self._mark_ran)
        self.module = model
        self.device = placement.device
        self._grads_before: list = []
        # FSDP2 averages an expert's gradient over its copies; the mean loss needs the sum over the copies divided
        # by the whole world (experts.py): ep_size times smaller.
        self._expert_scale = {id(p): dist.get_world_size(g.data_group) / placement.world_size
                              for g in self.experts for p in g.params}
        sharded = dict(model.named_parameters())
        # fully_shard replaces each parameter by a DTensor one; the client's param groups name the old objects.
        self.masters = {p: sharded[names[id(p)]] for p in originals}
        for original, master in self.masters.items():  # the MoE marks, for is_moe_param on the sharded parameters
            for mark in ("allreduce", "group_name"):
                if hasattr(original, mark):
                    setattr(master, mark, getattr(original, mark))

    def _mark_ran(self, module: nn.Module, args) -> None:
        self._ran.add(id(module))

    def before_forward(self, boundary: bool) -> None:
        if not self._zero_fills_unused:
            self._grads_before = [_grad_mark(m) for m in self.masters.values()]

    def after_backward(self, boundary: bool) -> None:
        """Refuse a backward whose collectives did not pair up across ranks: ranks that ran different blocks, or
        (FSDP2 without zero-filled unused parameters) that produced gradients for different parameters. Stopping
        before the optimizer step keeps the weights intact."""
        if self._zero_fills_unused:
            got = [id(block) in self._ran for block in self._blocks]
            problem = ("ran different blocks (a layer skipped on some ranks only). FSDP2 gathers and reduces a unit"
                       " of blocks together, so the ranks' collectives did not pair up: run every block on every"
                       " rank, or use ZeRO stage 0-2")
        else:
            got = [_grad_mark(m) != before for m, before in zip(self.masters.values(), self._grads_before, strict=True)]
            problem = ("computed gradients for different parameters (a branch or module used on some ranks only)."
                       " FSDP2 reduces only parameters that have gradients, so this cannot be averaged correctly:"
                       " use every parameter on every rank, or use ZeRO stage 0-2")
        self._ran.clear()
        world = dist.get_world_size()
        if world == 1 or not got:
            return
        counts = torch.tensor(got, dtype=torch.int32, device=self.device)
        dist.all_reduce(counts)
        if bool(((counts != 0) & (counts != world)).any()):
            raise RuntimeError(f"ZeRO stage 3: ranks {problem}")

    def grad_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Called once per optimizer step, after the cycle's last backward (the engine's or the script's own):
        where the experts' gradients get their scale, whichever backward ran."""
        pairs = []
        for param, master in self.masters.items():
            if master.grad is None:
                continue
            scale = self._expert_scale.get(id(param))
            if scale is not None and scale != 1.0:
                master.grad.mul_(scale)
            pairs.append((master, master.grad))
        return pairs

    def zero_grad(self) -> None:
        for master in self.masters.values():
            master.grad = None
