"""`dsrun.init_inference(model, config=None, **kwargs)`: DeepSpeed's call, on PyTorch's tensor parallelism."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh

from dsrun.console import say
from dsrun.errors import UsageError, exit_on_usage_error
from dsrun.inference import local_linear, plans, shard, shard_load, weights
from dsrun.inference.config import InferenceConfig, parse
from dsrun.inference.engine import InferenceEngine
from dsrun.runtime.distributed import init_distributed


def _notes(config: InferenceConfig, model: nn.Module, device: torch.device) -> list[str]:
    notes = []
    if config.ignored:
        notes.append(f"{', '.join(config.ignored)}: accepted for DeepSpeed configs; dsrun has no custom inference"
                     " kernels, the model runs with PyTorch's own")
    if config.dtype is None:
        current = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        if current is not None and current != torch.float16:
            notes.append(f"no dtype given: the model stays {current} (DeepSpeed would cast it to torch.float16);"
                         " pass dtype= to choose")
    if config.enable_cuda_graph and device.type == "cuda":
        notes.append("enable_cuda_graph: the model runs without CUDA graph capture (not implemented in dsrun)")
    return notes


def _plan(model: nn.Module, config: InferenceConfig, tp_size: int) -> plans.Plan:
    plan = plans.explicit(model, config.tp_plan) if config.tp_plan else plans.automatic(model)
    if not plan.styles:
        raise UsageError(f"{type(model).__name__} has no attention or MLP blocks dsrun recognises (q/k/v/o_proj,"
                         " GPT-2's c_attn/c_proj, gate/up/down_proj, c_fc/c_proj): pass tp_plan={module name pattern:"
                         ' "colwise" | "rowwise"}, or run at tp_size 1')
    plans.check_divides(plan, tp_size)
    return plan


def init_inference(model: nn.Module, config: Any = None, **kwargs: Any) -> InferenceEngine:
    """DeepSpeed's `deepspeed.init_inference`: config from a dict or path, kwargs overriding it. The model is cast
    to `dtype`, loaded from `checkpoint`, and split over the world's ranks (`tensor_parallel.tp_size`, by default
    the world size). A mistake ends the process with one line and exit code 2, as initialize() does."""
    with exit_on_usage_error():
        return build(model, config, **kwargs)


def build(model: nn.Module, config: Any = None, **kwargs: Any) -> InferenceEngine:
    """init_inference raising UsageError instead of exiting (for callers that handle it)."""
    if not isinstance(model, nn.Module):
        raise UsageError(f"init_inference takes a torch.nn.Module, got {type(model).__name__}")
    settings = parse(config, **kwargs)
    placement = init_distributed()
    world = placement.world_size
    tp_size = settings.tp_size if settings.tp_size is not None else world
    if tp_size != world:
        # One tensor-parallel group over the whole world; replicas (world = k * tp_size) are not built.
        raise UsageError(f"tensor_parallel.tp_size={tp_size} must equal the world size {world} (dsrun splits the"
                         f" model over every rank): start a world of {tp_size}, or set tp_size to {world}")
    if settings.enable_cuda_graph and placement.device.type != "cuda":
        raise UsageError("enable_cuda_graph needs CUDA; this job runs on CPU: remove enable_cuda_graph")
    if placement.rank == 0:
        for note in _notes(settings, model, placement.device):
            say(f"note: {note}")
    model.eval()
    on_meta = any(p.is_meta for p in model.parameters())
    if on_meta and settings.checkpoint is None:
        raise UsageError("the model is on the meta device: pass checkpoint= so init_inference has weights to load")
    source = shard_load.own_shards_source(settings.checkpoint) if on_meta and tp_size > 1 else None
    if source is not None:
        # Split while empty, then each rank allocates and reads only its shards.
        model.to(dtype=settings.dtype)
        _buffers_to(model, placement.device)
        plan = _plan(model, settings, tp_size)
        mesh = init_device_mesh(placement.device.type, (tp_size,), mesh_dim_names=("tp",))
        relayouts = shard.apply(model, plan, mesh, on_meta=True)
        shard_load.materialize_local(model, placement.device)
        shard_load.load(model, source, relayouts)
        local_linear.run_locally(model, plan, mesh.get_group())
        return InferenceEngine(model, settings, tp_size, placement.device)
    if settings.checkpoint is not None:
        weights.load_into(model, settings.checkpoint)
    model.to(device=placement.device, dtype=settings.dtype)
    if tp_size > 1:
        plan = _plan(model, settings, tp_size)
        mesh = init_device_mesh(placement.device.type, (tp_size,), mesh_dim_names=("tp",))
        shard.apply(model, plan, mesh)
        local_linear.run_locally(model, plan, mesh.get_group())
    return InferenceEngine(model, settings, tp_size, placement.device)


def _buffers_to(model: nn.Module, device: torch.device) -> None:
    for module in model.modules():
        for key, buffer in module._buffers.items():
            if buffer is not None and not buffer.is_meta:
                module._buffers[key] = buffer.to(device)
