"""`dsrun.DeepSpeedConfig(config)`: a run config read outside initialize(), as DeepSpeed scripts read one (BERT
examples take `DeepSpeedConfig(args.deepspeed_config).train_micro_batch_size_per_gpu` to size their layers).

Built from the same typed config the engine uses, with the batch math resolved for the world this process is in
(the process group's, else the launcher's WORLD_SIZE, else 1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from dsrun.config import load_config, parse_run_config
from dsrun.errors import UsageError

# DeepSpeed's optimizer names, which its config reports in lower case (other names as given).
_DEEPSPEED_OPTIMIZERS = ("adam", "adamw", "lamb", "onebitadam", "onebitlamb", "zerooneadam", "lion", "adagrad",
                         "muadam", "muadamw", "musgd", "muon")


def _world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


class DeepSpeedConfig:
    def __init__(self, config: str | os.PathLike | Mapping[str, Any], mpu=None, mesh_device=None):
        if mpu is not None or mesh_device is not None:
            raise UsageError("DeepSpeedConfig: model parallelism (mpu=, mesh_device=) is not supported by dsrun")
        if isinstance(config, Mapping):
            raw, source = dict(config), "config"
        else:
            raw, source = load_config(config), str(Path(config))
        typed = parse_run_config(raw, source=source)
        self._param_dict = raw
        self.world_size = _world_size()
        batch = typed.batch(self.world_size)
        self.train_batch_size = batch.train_batch_size
        self.train_micro_batch_size_per_gpu = batch.train_micro_batch_size_per_gpu
        self.gradient_accumulation_steps = batch.gradient_accumulation_steps
        self.steps_per_print = typed.steps_per_print
        self.dump_state = typed.dump_state
        self.gradient_clipping = typed.gradient_clipping
        self.prescale_gradients = typed.prescale_gradients
        self.gradient_predivide_factor = typed.gradient_predivide_factor
        self.wall_clock_breakdown = typed.wall_clock_breakdown
        self.fp16_enabled = typed.fp16.enabled
        self.bfloat16_enabled = typed.bf16.enabled
        self.loss_scale = typed.fp16.loss_scale
        self.initial_dynamic_scale = 2**typed.fp16.initial_scale_power
        self.zero_optimization_stage = typed.zero.stage
        self.zero_enabled = typed.zero.stage > 0
        self.zero_allow_untested_optimizer = typed.zero_allow_untested_optimizer
        optimizer = typed.optimizer
        name = optimizer.type if optimizer is not None else None
        self.optimizer_name = name.lower() if name and name.lower() in _DEEPSPEED_OPTIMIZERS else name
        self.optimizer_params = dict(optimizer.params) if optimizer is not None else None
        self.scheduler_name = typed.scheduler.type if typed.scheduler is not None else None
        self.scheduler_params = dict(typed.scheduler.params) if typed.scheduler is not None else None
        self.seed = typed.seed

    def print(self, name: str) -> None:
        print(f"{name}:")
        for key, value in sorted(vars(self).items()):
            if not key.startswith("_"):
                print(f"  {key} {'.' * max(1, 30 - len(key))} {value}")
