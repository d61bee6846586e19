"""What initialize refuses for MoE models: experts spread over ranks (ep_size > 1) as pipeline stages, where the
stage's strategy would average them with other experts."""

import pytest
from torch import nn

from dsrun.config.run_config import RunConfig
from dsrun.errors import UsageError
from dsrun.moe.setup import prepare_experts


def spread_expert_model() -> nn.Module:
    """A model whose parameters carry the marks Experts sets at ep_size 2 (no MoE layer: no groups are made)."""
    model = nn.Linear(2, 2)
    for param in model.parameters():
        param.allreduce = False
        param.group_name = "ep_size_2"
    return model


def test_experts_spread_over_ranks_are_refused_in_a_pipeline():
    with pytest.raises(UsageError, match="MoE layers with ep_size > 1 cannot be pipeline stages"):
        prepare_experts(spread_expert_model(), RunConfig(), pipelined=True)


def test_experts_spread_over_ranks_train_at_every_zero_stage_without_a_pipeline():
    prepare_experts(spread_expert_model(), RunConfig(), pipelined=False)
