"""What `dsrun.initialize()` does differently for a PipelineModule: its process groups, the replicas a stage's
gradients are averaged over, the config's `pipeline` section, tied weights made equal, and the engine it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dsrun.config.parallel_sections import PipelineConfig
from dsrun.config.run_config import RunConfig
from dsrun.console import say
from dsrun.errors import UsageError
from dsrun.pipe.activation import reentrant_checkpoint
from dsrun.pipe.groups import PipeGroups, data_placement, make_groups
from dsrun.pipe.module import PipelineModule
from dsrun.runtime.distributed import Placement


@dataclass
class PipeLayout:
    module: PipelineModule
    groups: PipeGroups
    data_placement: Placement  # this rank among its stage's replicas

    def agree_tied_weights(self) -> None:
        """Each stage built its own copy of a tied layer: start them all from the first holding stage's."""
        with torch.no_grad():
            for key, group in self.groups.tied.items():
                for attr, param in self.module.tied_parameters_of(key).items():
                    _check_same_shape(key, attr, param, group)
                    dist.broadcast(param.data, group=group, group_src=0)

    def engine(self, **engine_args: Any) -> nn.Module:
        from dsrun.pipe.engine import PipelineEngine  # loads torch.distributed.pipelining only for pipelines

        return PipelineEngine(groups=self.groups, data_placement=self.data_placement, **engine_args)


def _check_same_shape(key: str, attr: str, param: torch.Tensor, group: dist.ProcessGroup) -> None:
    """Every holder's copy must have the same shape and dtype before one is sent over the others (on gloo a larger
    message than the receiver's buffer aborts its process)."""
    mine = (tuple(param.shape), str(param.dtype))
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    if any(other != mine for other in everyone):
        shown = ", ".join(f"{list(shape)} {dtype.removeprefix('torch.')}" for shape, dtype in dict.fromkeys(everyone))
        raise UsageError(f"tied layer {key!r}: the stages holding it build {attr} with different shapes or dtypes"
                         f" ({shown}): a TiedLayerSpec key must build the same layer everywhere")


def pipeline_layout(model: nn.Module, cfg: RunConfig, placement: Placement) -> PipeLayout | None:
    """The pipeline's layout when `model` is a PipelineModule, else None (and a note if the config has a pipeline
    section that would go unused)."""
    if not isinstance(model, PipelineModule):
        if cfg.pipeline != PipelineConfig() and placement.rank == 0:
            say("warning: the config's pipeline section has no effect: the model is not a dsrun.pipe.PipelineModule")
        return None
    if model.world_size != placement.world_size:
        raise UsageError(f"the PipelineModule was built for a world of {model.world_size} rank(s), but this job has"
                         f" {placement.world_size}: call dsrun.init_distributed() before building it")
    if cfg.zero.stage >= 2:
        raise UsageError(f"ZeRO stage {cfg.zero.stage} does not combine with pipeline parallelism (nor in DeepSpeed):"
                         " the stages pass activations, not sharded gradients; use zero_optimization.stage 0 or 1")
    section = cfg.pipeline
    if section.activation_checkpoint_interval > 0:
        model.activation_checkpoint_interval = section.activation_checkpoint_interval
    if section.use_reentrant:
        model.activation_checkpoint_func = reentrant_checkpoint
    groups = make_groups(model)
    return PipeLayout(model, groups, data_placement(placement, groups))
