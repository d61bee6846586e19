"""The tensors of a checkpoint, keyed by parameter name, in a layout DCP can reshard.

Model entries are the fp32 master weights (the true weights in half-precision runs); optimizer entries are each
parameter's state. A tensor replicated on every rank is saved as a plain tensor (DCP writes it once); a rank's row
shard (stages 1-2) is wrapped as a DTensor with Shard(0), whose chunk sizes are the strategy's row ranges; FSDP2
(stage 3) already holds DTensors. DCP matches saved and wanted pieces by global offsets, so any of these layouts
loads into any other: another world size or another ZeRO stage needs no conversion step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from dsrun.runtime.strategies.layout import as_rows

if TYPE_CHECKING:
    from dsrun.runtime.engine import Engine  # the engine imports these modules itself


def frozen_parameter_names(module: nn.Module) -> set[str]:
    """Names of the parameters nothing trains (left out by exclude_frozen_parameters)."""
    return {name for name, param in module.named_parameters() if not param.requires_grad}


class StateMapper:
    """Translates between an engine's live tensors and the checkpoint's global, name-keyed tensors."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.strategy = engine.strategy
        self.names = {param: engine.param_names[param] for param in self.strategy.masters}
        self._meshes: dict[int, Any] = {}
        self._scalars: list[tuple[torch.Tensor, torch.Tensor]] = []  # (full copy, live shard) of 0-d parameters
        self._local_entries: set[tuple[str, str]] | None = None

    def _spread(self, param: nn.Parameter) -> tuple[dist.ProcessGroup | None, int]:
        """The process group `param`'s rows are spread over at stages 1-2 (None: the whole world) and its size; a
        size of 1 means the rank holds whole rows. Dense parameters are spread over the engine's data-parallel
        ranks (a pipeline stage's replicas), MoE experts over their expert-data-parallel group."""
        group, world = self.strategy.shard_group(param)
        return (group if group is not None else self.engine.data_group), world

    def _row_sharded(self, param: nn.Parameter) -> bool:
        return self._spread(param)[1] > 1

    def _mesh(self, group: dist.ProcessGroup | None):
        if id(group) not in self._meshes:
            from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

            device = self.engine.placement.device.type
            if group is None:
                self._meshes[id(group)] = init_device_mesh(device, (dist.get_world_size(),))
            else:
                self._meshes[id(group)] = DeviceMesh.from_group(group, device)
        return self._meshes[id(group)]

    def _global(self, param: nn.Parameter, local: torch.Tensor) -> torch.Tensor:
        """`local` (a master or a state tensor shaped like it) as a tensor of the parameter's global shape."""
        group, world = self._spread(param)
        if world == 1 or local.dim() == 0 and param.dim() != 0:
            return local  # replicated, or already a DTensor (FSDP2), or a per-parameter scalar such as Adam's step
        if param.dim() == 0:
            # One row, owned by the group's first rank: share it as a plain replicated value.
            # On the process group's device: an offloaded (CPU) master cannot go through NCCL.
            device = self.engine.placement.device
            full = local.reshape(1).to(device, copy=True) if local.numel() else torch.zeros(1, dtype=local.dtype,
                                                                                             device=device)
            dist.broadcast(full, group=group, group_src=0)
            self._scalars.append((full, local))
            return full.view(())
        from torch.distributed.tensor import DTensor, Shard

        if local.shape[1:] != as_rows(param).shape[1:]:
            raise RuntimeError(f"optimizer state of shape {tuple(local.shape)} for {self.names[param]} is not"
                               " element-wise: a sharded stage cannot checkpoint it")
        shape = param.shape
        stride = torch.empty(shape, device="meta").stride()
        return DTensor.from_local(local, self._mesh(group), [Shard(0)], run_check=False, shape=shape, stride=stride)

    def model_state(self, exclude_frozen: bool = False) -> dict[str, torch.Tensor]:
        """Trainable parameters as their masters, plus the module's other entries (buffers, frozen parameters:
        left out with `exclude_frozen`, as DeepSpeed's exclude_frozen_parameters does)."""
        masters = {self.names[p]: self._global(p, m) for p, m in self.strategy.masters.items()}
        module = self.engine.module
        frozen = frozen_parameter_names(module)
        # Parameters go by their checkpoint names (a pipeline's differ from the module's own; see PipelineModule).
        # At stage 3 the module holds FSDP2's parameters, which stand for the originals the names are kept by.
        original = {id(master): param for param, master in self.strategy.masters.items()}
        renamed = {name: self.engine.param_names.get(original.get(id(param), param), name)
                   for name, param in module.named_parameters()}
        others = {}
        for key, value in module.state_dict().items():
            name = renamed.get(key, key)
            if name not in masters and not (exclude_frozen and key in frozen):
                others[name] = value
        return {**others, **masters}

    def _rank_local_entries(self) -> set[tuple[str, str]]:
        """(parameter, state key) of optimizer state shaped unlike its master (a 0-d scalar aside) at a row-sharded
        stage: each rank's own value for its shard (a client optimizer's per-shard norm, say), which no global
        layout describes. Decided over all ranks: a rank holding one row cannot tell a (1,)-shaped statistic from
        an element-wise state, and ranks that classified one entry differently would save clashing pieces."""
        if self._local_entries is None:
            optimizer = self.engine.optimizer
            sharded = {param for param in self.strategy.masters if self._row_sharded(param)}
            mine = sorted(
                (self.names[param], key) for param, master in self.strategy.masters.items()
                for key, value in optimizer.state.get(master, {}).items()
                if param in sharded and isinstance(value, torch.Tensor) and value.dim() > 0
                and value.shape != master.shape
            )
            everyone: list = [mine]
            if self.strategy.spreads_rows() and dist.is_initialized() and dist.get_world_size() > 1:
                everyone = [None] * dist.get_world_size()
                dist.all_gather_object(everyone, mine)
            self._local_entries = {tuple(entry) for entries in everyone for entry in entries}
        return self._local_entries

    def _rank_local(self, param: nn.Parameter, key: str) -> bool:
        return (self.names[param], key) in self._rank_local_entries()

    def optimizer_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Each parameter's element-wise (and scalar) optimizer state, as global tensors."""
        optimizer = self.engine.optimizer
        state: dict[str, dict[str, torch.Tensor]] = {}
        for param, master in self.strategy.masters.items():
            entries = optimizer.state.get(master, {})
            state[self.names[param]] = {
                key: self._global(param, value) for key, value in entries.items()
                if isinstance(value, torch.Tensor) and not self._rank_local(param, key)
            }
        return state

    def rank_local_optimizer_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The state optimizer_state leaves out: saved per rank, as DeepSpeed saves every rank's optimizer state, and
        loaded back into the same rank (a run at another world size starts it afresh)."""
        optimizer = self.engine.optimizer
        state: dict[str, dict[str, torch.Tensor]] = {}
        for param, master in self.strategy.masters.items():
            local = {key: value for key, value in optimizer.state.get(master, {}).items()
                     if isinstance(value, torch.Tensor) and self._rank_local(param, key)}
            if local:
                state[self.names[param]] = local
        return state

    def finish_load(self) -> None:
        """Write loaded values of 0-d parameters back into their shards."""
        with torch.no_grad():
            for full, local in self._scalars:
                if local.numel():
                    local.copy_(full.reshape(local.shape))
        self._scalars.clear()


def non_tensor_optimizer_state(engine: Engine) -> dict[str, dict[str, Any]]:
    """Per-parameter optimizer entries that are not tensors (DCP stores tensors; these go to the state file)."""
    names = {m: engine.param_names[p] for p, m in engine.strategy.masters.items()}
    return {
        names[m]: {k: v for k, v in engine.optimizer.state.get(m, {}).items() if not isinstance(v, torch.Tensor)}
        for m in names
    }


def ensure_optimizer_state(optimizer: torch.optim.Optimizer, masters: list[torch.Tensor]) -> None:
    """Create every parameter's optimizer state (torch creates it lazily at the first step) so a load has
    tensors to fill: one step with zero gradients and a learning rate of 0 changes no weight."""
    if all(optimizer.state.get(m) for m in masters):
        return
    saved_lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for master in masters:
        master.grad = torch.zeros_like(master)
    optimizer.step()
    for master in masters:
        master.grad = None
    for group, lr in zip(optimizer.param_groups, saved_lrs, strict=True):
        group["lr"] = lr
