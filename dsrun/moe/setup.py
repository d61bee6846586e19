"""What `dsrun.initialize()` does for a model with MoE layers: their process groups, made on every rank in module
order (group creation is collective), what the engine cannot train right refused in one line (experts spread over
ranks in a pipeline), and the checkpoint names that key each expert by its global index."""

from __future__ import annotations

import torch.distributed as dist
from torch import nn

from dsrun.config.run_config import RunConfig
from dsrun.errors import UsageError
from dsrun.moe.layer import MoE
from dsrun.moe.state import expert_key_map
from dsrun.runtime.strategies.experts import expert_parameter_ids


def prepare_experts(model: nn.Module, cfg: RunConfig, pipelined: bool) -> None:
    if pipelined and expert_parameter_ids(model):
        # The pipeline's strategies average every parameter over a stage's replicas: experts spread over ranks
        # would be averaged with other experts, a silently wrong model.
        raise UsageError("MoE layers with ep_size > 1 cannot be pipeline stages in this version: set ep_size to 1"
                         " in a pipeline, or train without one")
    if dist.is_initialized():
        for layer in [module for module in model.modules() if isinstance(module, MoE)]:
            layer.set_deepspeed_parallelism(cfg.use_data_before_expert_parallelism)

def expert_checkpoint_names(model: nn.Module) -> dict[nn.Parameter, str]:
    """Each parameter's checkpoint name: its own, an expert's under its global expert index."""
    global_keys = expert_key_map(model)
    return {param: global_keys.get(name, name) for name, param in model.named_parameters()}
