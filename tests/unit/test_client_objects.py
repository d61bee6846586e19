"""A client optimizer and the LR scheduler built on it keep working together through the engine (world size 1)."""


import pytest
import torch
from torch import nn

import dsrun


@pytest.mark.parametrize("stage", [0, 1])
def test_client_scheduler_drives_the_optimizer_the_engine_steps(single_process, stage):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step == 0 else 0.0)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_clipping": 0, "zero_optimization": {"stage": stage}}
    engine, returned, _, returned_scheduler = dsrun.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler, config=config)
    assert returned is optimizer and returned_scheduler is scheduler
    weights = []
    for _ in range(3):
        engine.backward(engine(torch.ones(2, 3)).pow(2).mean())
        engine.step()
        weights.append(model.weight.detach().clone())
    assert engine.get_lr() == [0.0]  # the scheduler stepped the engine's optimizer
    assert not torch.equal(weights[0], torch.zeros_like(weights[0]))
    assert torch.equal(weights[1], weights[2])  # lr 0 from the second update on: the weights stop moving
