"""What init_inference returns: DeepSpeed's InferenceEngine surface over the (split) model."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dsrun.errors import UsageError
from dsrun.inference.config import InferenceConfig
from dsrun.inference.cuda_graphs import GraphedForward


class InferenceEngine(nn.Module):
    def __init__(self, module: nn.Module, config: InferenceConfig, tp_size: int, device: torch.device,
                 tp_group: dist.ProcessGroup | None = None):
        super().__init__()
        self.module = module
        self._config = config
        self.tp_size = tp_size
        self.device = device
        self.tp_group = tp_group  # this rank's tensor-parallel group (its replica); None when tp_size is 1
        self._graphed = GraphedForward(module) if config.enable_cuda_graph else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            if self._graphed is not None:
                return self._graphed(*args, **kwargs)
            return self.module(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        # Never through the CUDA graphs: the KV cache grows every token, so each step would be a new signature.
        generate = getattr(self.module, "generate", None)
        if not callable(generate):
            raise UsageError(f"{type(self.module).__name__} has no generate(): call the engine to run the model")
        if self.tp_group is None:
            return generate(*args, **kwargs)
        # The ranks of a replica must pick the same tokens, or they would stop at different lengths and wait on each
        # other's all-reduces. The logits are bitwise equal on those ranks (an all-reduce hands every rank the same
        # sum), so greedy and beam search agree by themselves; sampling also needs the same random draws: a
        # replica's ranks sample with its first rank's seed, in a forked RNG so their own generators are left as
        # they were. Replicas serve different inputs and draw independently, as separate DeepSpeed engines do.
        seed = torch.randint(0, 2**62, (1,), dtype=torch.int64, device=self.device)
        dist.broadcast(seed, group=self.tp_group, group_src=0)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed.item()))
            return generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # The model's own attributes (config, device, ...) through the engine, as DeepSpeed's engine forwards them.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)
