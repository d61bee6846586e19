"""dsrun.moe: DeepSpeed's mixture of experts (deepspeed.moe) with expert parallelism over all_to_all.

    from dsrun.moe.layer import MoE                    # deepspeed.moe.layer.MoE, same arguments and returns
    from dsrun.moe.utils import split_params_into_different_moe_groups_for_optimizer, is_moe_param

Files, one concern each: layer (MoE), moe_layer (MOELayer: dispatch, the all_to_all exchange, combine), gate
(TopKGate), gating (DeepSpeed's top-1/top-2 formulas and gate noise), dispatch, experts (Experts, parameter marks),
groups (expert-parallel process groups, DeepSpeed's accessors), utils (param groups, the expert gradient scale),
state (expert keys by global index for checkpoints), setup (what initialize does for MoE models), sharded_moe
(DeepSpeed's names) and checks.
"""

from __future__ import annotations

from dsrun.moe import groups, layer, sharded_moe, utils
from dsrun.moe.layer import MoE

__all__ = ["MoE", "groups", "layer", "sharded_moe", "utils"]
