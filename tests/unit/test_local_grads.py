"""One rank, nothing to average: gradients stay where autograd puts them (LocalGrads), and a parameter the cycle did
not use is still stepped with a zero gradient, as with the flat buffers a world of several ranks uses."""

import pytest
import torch
from torch import nn

import dsrun
from dsrun.runtime.strategies.local_grads import LocalGrads


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(2, 1)
        self.unused = nn.Linear(2, 1)

    def forward(self, x):
        return self.used(x)


def make(**zero):
    torch.manual_seed(0)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
              "optimizer": {"type": "AdamW", "params": {"lr": 0.1, "weight_decay": 0.5}},
              "zero_optimization": {"stage": 0, **zero}}
    engine, *_ = dsrun.initialize(model=TwoBranches(), config=config)
    return engine


def test_one_rank_keeps_autograds_gradients_and_steps_an_unused_parameter_with_zero(single_process):
    engine = make()
    assert [type(s) for s in engine.strategy.grad_sets] == [LocalGrads]
    before = engine.module.unused.weight.detach().clone()
    x = torch.ones(2, 2)
    grads = []
    for _ in range(2):  # two micro-batches accumulate into the same .grad, then the second step() steps
        engine.backward(engine(x).sum())
        grads.append(engine.module.used.weight.grad.clone())
        if len(grads) == 1:
            engine.step()
    assert torch.equal(grads[1], 2 * grads[0])
    engine.step()
    # AdamW with a zero gradient still decays the weight: lr x weight_decay = 5% of it.
    assert torch.allclose(engine.module.unused.weight, before * (1 - 0.1 * 0.5))
    assert engine.module.used.weight.grad is None and engine.module.unused.weight.grad is None


def test_one_rank_refuses_an_unused_parameter_when_the_config_forbids_it(single_process):
    engine = make(ignore_unused_parameters=False)
    engine.backward(engine(torch.ones(2, 2)).sum())
    engine.step()
    with pytest.raises(RuntimeError, match="parameters received no gradient: unused.weight, unused.bias"):
        engine.backward(engine(torch.ones(2, 2)).sum())  # the cycle's last backward: the boundary
