"""Two engines in one process (DeepSpeed's GAN example): progress lines say which engine they are about."""

import torch

import dsrun
from dsrun.runtime.engine import Engine

CONFIG = {"train_micro_batch_size_per_gpu": 2, "steps_per_print": 1,
          "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}


def test_progress_lines_name_the_engine_once_there_are_two(single_process, capsys, monkeypatch):
    monkeypatch.setattr(Engine, "_made", 0)  # as in a fresh script: other tests made engines in this process
    generator, *_ = dsrun.initialize(model=torch.nn.Linear(2, 2), config=CONFIG)
    generator.backward(generator(torch.ones(2, 2)).sum())
    generator.step()
    alone = capsys.readouterr().err
    assert "step 1 loss" in alone and "engine" not in alone.split("step 1")[0].splitlines()[-1]
    discriminator, *_ = dsrun.initialize(model=torch.nn.Sequential(torch.nn.Linear(2, 1)), config=CONFIG)
    for engine in (generator, discriminator):
        engine.backward(engine(torch.ones(2, 2)).sum())
        engine.step()
    lines = [line for line in capsys.readouterr().err.splitlines() if "loss" in line]
    assert lines[0].startswith("dsrun: engine ") and "(Linear): step 2 loss" in lines[0]
    assert "(Sequential): step 1 loss" in lines[1]
