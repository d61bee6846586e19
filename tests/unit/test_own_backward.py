"""A script's own loss.backward() instead of engine.backward(loss): averaged at engine.step() (the e2e tests check the
average over ranks), but refused with fp16 loss scaling, where the unscaled gradients would be divided wrongly."""

import pytest
import torch

import dsrun


def make(**extra):
    config = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "SGD", "params": {"lr": 0.1}}, **extra}
    engine, *_ = dsrun.initialize(model=torch.nn.Linear(2, 1), config=config)
    return engine


def test_own_backward_updates_like_engine_backward(single_process):
    torch.manual_seed(0)
    ours, theirs = make(), make()
    theirs.module.load_state_dict(ours.module.state_dict())
    x = torch.ones(2, 2)
    ours(x).sum().backward()
    ours.step()
    theirs.backward(theirs(x).sum())
    theirs.step()
    assert torch.equal(ours.module.weight, theirs.module.weight)


def test_own_backward_with_fp16_loss_scaling_is_refused(single_process):
    engine = make(fp16={"enabled": True})
    engine(torch.ones(2, 2, dtype=torch.float16)).float().sum().backward()
    with pytest.raises(RuntimeError, match="call engine.backward\\(loss\\) instead of loss.backward\\(\\)"):
        engine.step()
