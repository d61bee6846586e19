"""engine.load_checkpoint: read a dsrun checkpoint saved at any world size and ZeRO stage into this engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed.checkpoint as dcp

from dsrun.console import say
from dsrun.errors import UsageError
from dsrun.runtime.checkpoint import layout, rng
from dsrun.runtime.checkpoint.save import FORMAT
from dsrun.runtime.checkpoint.state import StateMapper, ensure_optimizer_state, frozen_parameter_names
from dsrun.runtime.checkpoint.sync import all_ranks_arrive

if TYPE_CHECKING:
    from dsrun.runtime.engine import Engine  # the engine imports these modules itself


def _resolve(load_dir: Path, tag: str | None, rank: int) -> Path | None:
    if tag is None:
        tag = layout.read_latest(load_dir)
        if tag is None:
            if rank == 0:
                say(f"warning: no checkpoint to load: {load_dir / layout.LATEST} does not exist; starting fresh")
            return None
    path = layout.find_tag_dir(load_dir, layout.check_tag(tag))
    if path is None:
        tags = ", ".join(layout.available_tags(load_dir)) or "none"
        raise UsageError(f"checkpoint tag {tag!r} not found in {load_dir} (available: {tags})")
    if not layout.is_checkpoint(path):
        foreign = layout.describe_foreign(path)
        raise UsageError(f"{path} is not a dsrun checkpoint" + (f": it is {foreign}" if foreign else ""))
    return path


def load_checkpoint(engine: Engine, load_dir, tag: str | None = None, load_optimizer_states: bool = True,
                    load_lr_scheduler_states: bool = True, load_module_only: bool = False):
    engine._checkpoint_calls += 1
    all_ranks_arrive("load_checkpoint", engine._checkpoint_calls)
    path = _resolve(Path(load_dir), tag, engine.global_rank)
    if path is None:
        return None, None
    saved: dict[str, Any] = torch.load(path / layout.STATE_FILE, weights_only=False)
    if saved.get("format") != FORMAT:
        raise UsageError(f"{path}: unknown checkpoint format {saved.get('format')!r} (expected {FORMAT})")

    with_optimizer = load_optimizer_states and not load_module_only and engine.optimizer is not None
    if with_optimizer:
        ensure_optimizer_state(engine.optimizer, list(engine.strategy.masters.values()))
    mapper = StateMapper(engine)
    saved_keys = set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)
    wanted: dict[str, Any] = {"model": mapper.model_state()}
    # Frozen parameters left out by save_checkpoint(exclude_frozen_parameters=True) keep their current values.
    for name in frozen_parameter_names(engine.module):
        if f"model.{name}" not in saved_keys:
            wanted["model"].pop(name, None)
    stateless: list[str] = []
    if with_optimizer:
        wanted["optimizer"] = mapper.optimizer_state()
        stateless = _drop_unsaved_state(wanted["optimizer"], saved_keys)
        rank_local = mapper.rank_local_optimizer_state()
        if rank_local and saved.get("world_size") == engine.world_size:  # one rank's shard, so the same world only
            key = f"optimizer_rank{engine.global_rank}"
            _drop_unsaved_state(rank_local, saved_keys, prefix=key)
            wanted[key] = rank_local
        elif rank_local and engine.global_rank == 0:
            say(f"warning: {path} was saved by {saved.get('world_size')} ranks; the optimizer's state that is not"
                f" element-wise ({', '.join(sorted(rank_local))[:200]}) belongs to one rank's shard, so it starts"
                f" afresh at {engine.world_size}")
    with torch.no_grad():
        dcp.load(wanted, checkpoint_id=str(path))
    mapper.finish_load()
    engine.strategy.after_load()
    if stateless:  # as saved: no state yet (the optimizer creates it at the parameter's first update)
        if engine.global_rank == 0:
            shown = ", ".join(stateless[:3]) + (f" and {len(stateless) - 3} more" if len(stateless) > 3 else "")
            say(f"warning: {path} has no optimizer state for {shown} (frozen when saved, or saved with another"
                " optimizer): their state starts afresh")
        masters = {engine.param_names[p]: m for p, m in engine.strategy.masters.items()}
        for name in stateless:
            engine.optimizer.state.pop(masters[name], None)

    if with_optimizer:
        _restore_optimizer_extras(engine, saved)
    if not load_module_only:
        _restore_training_state(engine, saved, path, load_lr_scheduler_states)
    return str(path), saved.get("client_state")


def _drop_unsaved_state(wanted: dict[str, dict[str, Any]], saved: set[str], prefix: str = "optimizer") -> list[str]:
    """Leave out optimizer entries the checkpoint does not have; returns the parameters that had none at all.

    A parameter the optimizer never stepped before the save (frozen then, or never given a gradient by an older
    dsrun) has no state in the checkpoint, while this engine made state for every parameter to have tensors to load
    into. Asking DCP for it would fail the whole load.
    """
    stateless = []
    for name, entries in wanted.items():
        absent = [key for key in entries if f"{prefix}.{name}.{key}" not in saved]
        for key in absent:
            del entries[key]
        if absent and not entries:
            stateless.append(name)
    return stateless


def _restore_optimizer_extras(engine: Engine, saved: dict[str, Any]) -> None:
    groups = saved.get("param_groups") or []
    if len(groups) == len(engine.optimizer.param_groups):
        for group, hyper in zip(engine.optimizer.param_groups, groups, strict=True):
            group.update(hyper)
    names = {engine.param_names[p]: m for p, m in engine.strategy.masters.items()}
    for name, extra in (saved.get("optimizer_extra") or {}).items():
        if name in names and extra:
            engine.optimizer.state[names[name]].update(extra)


def _restore_training_state(engine: Engine, saved: dict[str, Any], path: Path, with_scheduler: bool) -> None:
    engine.global_steps = saved["global_steps"]
    engine.global_samples = saved["global_samples"]
    engine.micro_steps = saved["micro_steps"]
    engine.skipped_steps = saved["skipped_steps"]
    if with_scheduler and engine.lr_scheduler is not None and saved.get("lr_scheduler") is not None:
        engine.lr_scheduler.load_state_dict(saved["lr_scheduler"])
    if engine.loss_scaler is not None and saved.get("loss_scaler") is not None:
        engine.loss_scaler.load_state_dict(saved["loss_scaler"])
    if engine.training_dataloader is not None and saved.get("dataloader") is not None:
        note = engine.training_dataloader.load_state_dict(saved["dataloader"])
        if note and engine.global_rank == 0:
            say(f"warning: {note}")
    rng_file = path / "rng" / f"rank{engine.global_rank}.pt"
    # A rank that did not exist at save time keeps its own generators.
    if engine.config.checkpoint.load_rng_state and rng_file.is_file():
        rng.restore(torch.load(rng_file, weights_only=False))
