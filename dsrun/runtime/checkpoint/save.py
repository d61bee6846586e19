"""engine.save_checkpoint: every rank writes its shards into a staging directory, rank 0 publishes it by rename."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from dsrun.runtime.checkpoint import layout, rng
from dsrun.runtime.checkpoint.agree import agree_on_target
from dsrun.runtime.checkpoint.state import StateMapper, non_tensor_optimizer_state
from dsrun.runtime.checkpoint.sync import all_ranks_arrive

if TYPE_CHECKING:
    from dsrun.runtime.engine import Engine  # the engine imports these modules itself

FORMAT = "dsrun-checkpoint/1"


def _same_everywhere(value: str) -> str:
    if dist.is_initialized() and dist.get_world_size() > 1:
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]
    return value


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def engine_state(engine: Engine, client_state: dict[str, Any]) -> dict[str, Any]:
    """Everything but the tensors of parameters and optimizer state (rank 0's file)."""
    optimizer = engine.optimizer
    loader = engine.training_dataloader
    return {
        "format": FORMAT,
        "global_steps": engine.global_steps,
        "global_samples": engine.global_samples,
        "micro_steps": engine.micro_steps,
        "skipped_steps": engine.skipped_steps,
        "world_size": engine.world_size,
        "zero_stage": engine.zero_optimization_stage(),
        "precision": engine.precision.name,
        "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        if optimizer is not None else None,
        "optimizer_extra": _everyones(non_tensor_optimizer_state(engine)) if optimizer is not None else None,
        "lr_scheduler": engine.lr_scheduler.state_dict() if engine.lr_scheduler is not None else None,
        "loss_scaler": engine.loss_scaler.state_dict() if engine.loss_scaler is not None else None,
        "dataloader": loader.state_dict() if loader is not None else None,
        "client_state": client_state,
        "config": engine.config.raw,
        "pipeline": _pipeline_record(engine),
    }


def _everyones(mine: dict[str, Any]) -> dict[str, Any]:
    """Per-parameter entries of every rank merged (a pipeline's stages hold different parameters)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return mine
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return {name: entry for entries in everyone for name, entry in entries.items()}


def _pipeline_record(engine: Engine) -> dict[str, Any] | None:
    """What exporting a pipeline's whole layer list needs: where each tied layer appears."""
    from dsrun.pipe.module import PipelineModule

    module = engine.module
    if not isinstance(module, PipelineModule):
        return None
    return {"num_stages": module.num_stages, "num_layers": len(module.layer_names),
            "tied_positions": module.tied_positions()}


def save_checkpoint(engine: Engine, save_dir, tag: str | None = None, client_state: dict | None = None,
                    save_latest: bool = True, exclude_frozen_parameters: bool = False) -> bool:
    engine._checkpoint_calls += 1
    all_ranks_arrive("save_checkpoint", engine._checkpoint_calls)
    wanted_tag = tag if tag is not None else f"global_step{engine.global_steps}"
    directory, tag = agree_on_target(save_dir, wanted_tag, engine.config.checkpoint.tag_validation)
    save_dir = Path(directory)
    layout.check_tag(tag)
    nonce = _same_everywhere(uuid.uuid4().hex[:12])
    staged = layout.temp_dir(save_dir, tag, nonce)
    staged.mkdir(parents=True, exist_ok=True)

    mapper = StateMapper(engine)
    tensors: dict[str, Any] = {"model": mapper.model_state(exclude_frozen=exclude_frozen_parameters)}
    if engine.optimizer is not None:
        tensors["optimizer"] = mapper.optimizer_state()
        rank_local = mapper.rank_local_optimizer_state()
        if rank_local:
            tensors[f"optimizer_rank{engine.global_rank}"] = rank_local
    # No fsync per shard (torch.save does none either; it made saves ~1.5x slower here): the rename protocol
    # survives any process being killed, not a power cut before the page cache reaches the disk.
    dcp.save(tensors, storage_writer=dcp.FileSystemWriter(str(staged), sync_files=False))
    (staged / "rng").mkdir(exist_ok=True)
    torch.save(rng.capture(), staged / "rng" / f"rank{engine.global_rank}.pt")
    state = engine_state(engine, client_state or {})  # every rank: it gathers the stages' optimizer entries
    if engine.global_rank == 0:
        torch.save(state, staged / layout.STATE_FILE)
    _barrier()  # every shard is on disk

    if engine.global_rank == 0:
        layout.publish(save_dir, staged, tag, nonce)
        layout.remove_stale(save_dir, nonce)
        if save_latest:
            layout.write_latest(save_dir, tag)
        keep = engine.config.checkpoint.keep_last
        if keep:
            layout.prune(save_dir, keep, protect=tag)
    _barrier()  # nobody returns before the checkpoint is published
    return True
