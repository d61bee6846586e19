"""`dsrun.init_inference(model, config=None, **kwargs)`: DeepSpeed's call, on PyTorch's tensor parallelism."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from dsrun.console import say
from dsrun.errors import UsageError, exit_on_usage_error
from dsrun.inference import file_shards, local_linear, plans, shard, shard_load, weights
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
        notes.append("enable_cuda_graph: engine(...) is captured once per input signature (shapes, dtypes) and"
                     " replayed; its outputs are overwritten by the next call of that signature (clone to keep them);"
                     " generate() runs uncaptured (its KV cache changes shape every token)")
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
    if world % tp_size:
        raise UsageError(f"tensor_parallel.tp_size={tp_size} does not divide the world size {world} (each model"
                         f" replica is tp_size consecutive ranks): choose a tp_size that divides {world}")
    if settings.enable_cuda_graph and placement.device.type != "cuda":
        raise UsageError("enable_cuda_graph needs CUDA; this job runs on CPU: remove enable_cuda_graph")
    if placement.rank == 0:
        for note in _notes(settings, model, placement.device):
            say(f"note: {note}")
    _check_experts_whole(model)
    model.eval()
    on_meta = any(p.is_meta for p in model.parameters())
    if on_meta and settings.checkpoint is None:
        raise UsageError("the model is on the meta device: pass checkpoint= so init_inference has weights to load")
    # DeepSpeed's layout: replica r is ranks r * tp_size .. r * tp_size + tp_size - 1; the model is split over "tp".
    mesh = init_device_mesh(placement.device.type, (world // tp_size, tp_size),
                            mesh_dim_names=("replica", "tp")) if world > 1 else None
    tp_group = mesh.get_group("tp") if mesh is not None and tp_size > 1 else None
    own_parts = on_meta and tp_size > 1
    directory = shard_load.own_shards_source(settings.checkpoint) if own_parts else None
    file = settings.checkpoint if own_parts and settings.checkpoint is not None and settings.checkpoint.is_file() \
        else None
    if directory is not None or file is not None:
        # Split while empty, then each rank allocates and reads only its own part.
        assert mesh is not None
        model.to(dtype=settings.dtype)
        _buffers_to(model, placement.device)
        plan = _plan(model, settings, tp_size)
        relayouts = shard.apply(model, plan, mesh["tp"], on_meta=True)
        shard_load.materialize_local(model, placement.device)
        if file is not None:
            file_shards.load(model, file, relayouts)
        else:
            assert directory is not None
            shard_load.load(model, directory, relayouts)
        local_linear.run_locally(model, plan, mesh.get_group("tp"))
        return InferenceEngine(model, settings, tp_size, placement.device, tp_group)
    if settings.checkpoint is not None:
        weights.load_into(model, settings.checkpoint)
    model.to(device=placement.device, dtype=settings.dtype)
    if mesh is not None and world > tp_size and settings.checkpoint is None:
        _weights_of_replica_zero(model, mesh)
    if tp_size > 1:
        assert mesh is not None
        plan = _plan(model, settings, tp_size)
        shard.apply(model, plan, mesh["tp"])
        local_linear.run_locally(model, plan, mesh.get_group("tp"))
    return InferenceEngine(model, settings, tp_size, placement.device, tp_group)


def _check_experts_whole(model: nn.Module) -> None:
    """A dsrun MoE layer built with ep_size > 1 holds only its rank's experts: broadcasting rank 0's weights would
    give every rank rank 0's experts under other experts' indices. Inference runs every expert on every rank."""
    from dsrun.moe.layer import MoE

    for name, module in model.named_modules():
        if isinstance(module, MoE) and module.ep_size > 1:
            raise UsageError(f"{name} is an MoE layer built with ep_size={module.ep_size}: init_inference has no"
                             " expert parallelism; build the model with ep_size=1 (every rank holds every expert) and"
                             " pass the checkpoint trained at any ep_size")


def _weights_of_replica_zero(model: nn.Module, mesh: DeviceMesh) -> None:
    """Every replica runs global rank 0's weights, as a single split model runs its group's first rank's: the first
    rank of each tensor-parallel group takes rank 0's weights (a broadcast over the replica-dimension group of the
    ranks at tp position 0). The split then scatters from that rank and broadcasts the whole ones from it, so the
    other ranks' own weights are never read and they take no part here. Not needed after a checkpoint was read:
    every rank read the same file."""
    if mesh.get_local_rank("tp") != 0:
        return
    group = mesh.get_group("replica")
    source = dist.get_global_rank(group, 0)
    seen: set[int] = set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            dist.broadcast(tensor.data, src=source, group=group)


def _buffers_to(model: nn.Module, device: torch.device) -> None:
    for module in model.modules():
        for key, buffer in module._buffers.items():
            if buffer is not None and not buffer.is_meta:
                module._buffers[key] = buffer.to(device)
