"""What `dsrun.initialize()` does for a model with MoE layers: their process groups, made on every rank in module
order (group creation is collective), the combinations the engine cannot train right yet refused in one line, and
the checkpoint names that key each expert by its global index."""

from __future__ import annotations

import torch.distributed as dist
from torch import nn

from dsrun.config.run_config import RunConfig
from dsrun.errors import UsageError
from dsrun.moe.layer import MoE
from dsrun.moe.state import expert_key_map
from dsrun.runtime.strategies.experts import expert_parameter_ids


def prepare_experts(model: nn.Module, cfg: RunConfig, pipelined: bool) -> None:
    layers = [module for module in model.modules() if isinstance(module, MoE)]
    if not layers:
        return
    if dist.is_initialized():
        for layer in layers:
            layer.set_deepspeed_parallelism(cfg.use_data_before_expert_parallelism)
    if expert_parameter_ids(model) and (cfg.zero.stage > 0 or pipelined):
        where = "in a pipeline" if pipelined else f"at ZeRO stage {cfg.zero.stage}"
        # Averaging experts over their own group is built for stage 0's gradients only; elsewhere the experts would
        # be sharded or averaged over ranks holding other experts: a silently wrong model.
        raise UsageError(f"MoE layers with ep_size > 1 train at ZeRO stage 0 without a pipeline in this version, not"
                         f" {where}: set zero_optimization.stage to 0, or ep_size to 1")


def expert_checkpoint_names(model: nn.Module) -> dict[nn.Parameter, str]:
    """Each parameter's checkpoint name: its own, an expert's under its global expert index."""
    global_keys = expert_key_map(model)
    return {param: global_keys.get(name, name) for name, param in model.named_parameters()}
