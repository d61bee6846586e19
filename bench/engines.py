"""dsrun's engine and DeepSpeed's behind the same `step(micro_batches)` the hand-written loops have: a script's
calls, `loss = engine(x)`, `engine.backward(loss)`, `engine.step()`, once per micro-batch."""

from __future__ import annotations

import torch
from torch import nn

from bench.models import lm_loss
from bench.train_setup import ds_config


class _EngineTrainer:
    def __init__(self, engine):
        self.engine = engine

    def step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        losses = []
        for tokens, targets in micro:
            loss = lm_loss(self.engine(tokens), targets)
            self.engine.backward(loss)
            self.engine.step()
            losses.append(loss.detach())
        return losses


class DsrunTrainer(_EngineTrainer):
    name = "dsrun"

    def __init__(self, model: nn.Module, stage: int, precision: str, communication_data_type: str | None = None):
        import dsrun

        engine, _, _, _ = dsrun.initialize(model=model, config=ds_config(stage, precision, communication_data_type))
        super().__init__(engine)

    # The engine counts its own model state during the update; the benchmark only switches it on and reads it.
    @property
    def track_model_state(self) -> bool:
        return self.engine.track_model_state

    @track_model_state.setter
    def track_model_state(self, value: bool) -> None:
        self.engine.track_model_state = value

    @property
    def model_state(self) -> dict | None:
        return self.engine.model_state


class DeepSpeedTrainer(_EngineTrainer):
    """DeepSpeed's own optimizer wrappers hold flat buffers the tensor count cannot see, so only RSS compares."""

    name = "deepspeed"

    def __init__(self, model: nn.Module, stage: int, precision: str, communication_data_type: str | None = None):
        import deepspeed

        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                               config=ds_config(stage, precision, communication_data_type))
        super().__init__(engine)
        self.track_model_state = False
        self.model_state = None
