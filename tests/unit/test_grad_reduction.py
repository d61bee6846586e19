"""Which dtype and scaling the gradient sum over ranks uses (DeepSpeed's communication_data_type,
prescale_gradients, gradient_predivide_factor)."""

import torch

from dsrun.config import parse_run_config
from dsrun.runtime.strategies.reduction import grad_reduction

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def reduction(world=4, grad=BF16, stage=0, **config):
    return grad_reduction(parse_run_config(config), world, grad, stage)


def test_the_sum_is_fp32_unless_configured():
    assert reduction().dtype == FP32 and reduction(grad=FP16).dtype == FP32
    assert reduction(communication_data_type="bf16", grad=FP32).dtype == BF16
    assert reduction(world=2, communication_data_type="fp32").dtype == FP32


def test_two_ranks_sum_bf16_in_bf16_only_where_the_bits_cannot_change():
    assert reduction(world=2, stage=0).dtype == BF16 and reduction(world=2, stage=1).dtype == BF16
    for kwargs in ({"stage": 2}, {"stage": 3}, {"grad": FP16}, {"grad": FP32}, {"world": 3},
                   {"prescale_gradients": True}, {"gradient_predivide_factor": 4}):
        assert reduction(**{"world": 2, **kwargs}).dtype == FP32, kwargs


def test_division_before_and_after_the_sum():
    assert (reduction().pre_factor, reduction().post_factor) == (1, 4)  # DeepSpeed's default: sum, then average
    scaled = reduction(prescale_gradients=True)
    assert (scaled.pre_factor, scaled.post_factor) == (4, 1)
    split = reduction(gradient_predivide_factor=8)
    assert (split.pre_factor, split.post_factor) == (8, 0.5)
