"""`dsrun.initialize()`: DeepSpeed's entry point. Reads the config, joins the process group, wraps the model for
its ZeRO stage and precision, and builds the optimizer, LR schedule and data loader the config asks for."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dsrun.checkpointing import configure_from
from dsrun.config import load_config, parse_run_config
from dsrun.config.run_config import RunConfig
from dsrun.console import say
from dsrun.errors import UsageError, exit_on_usage_error
from dsrun.moe.setup import expert_checkpoint_names, prepare_experts
from dsrun.pipe.setup import pipeline_layout
from dsrun.runtime.dataloader import DistributedLoader
from dsrun.runtime.distributed import Placement, init_distributed
from dsrun.runtime.engine import Engine
from dsrun.runtime.materialize import check_initialisable, is_meta, materialize, materialize_sharded
from dsrun.runtime.monitor import build_monitor, monitor_enabled
from dsrun.runtime.optim import (
    adopt_client_optimizer,
    build_optimizer,
    check_shardable,
    recipe_from_client,
    recipe_from_config,
)
from dsrun.runtime.optim.lamb import Lamb
from dsrun.runtime.precision import Precision, choose_precision
from dsrun.runtime.strategies import Strategy, StrategyContext, make_strategy
from dsrun.runtime.strategies.base import sharded_by_stage3
from dsrun.runtime.strategies.reduction import grad_reduction


def _raw_config(args, config, config_params) -> tuple[dict[str, Any], str]:
    if config is not None and config_params is not None:
        raise UsageError("give the config once: config= or config_params=, not both")
    given = config if config is not None else config_params
    from_args = None
    if args is not None:
        from_args = getattr(args, "deepspeed_config", None) or getattr(args, "config", None)
        if from_args is None and getattr(args, "deepscale_config", None) is not None:
            from_args = args.deepscale_config  # DeepSpeed's deprecated name, which it still reads
    if given is not None and from_args is not None:
        raise UsageError("the config was given twice (in args and to initialize()): pass it one way")
    source = given if given is not None else from_args if from_args is not None else os.environ.get("DSRUN_CONFIG")
    if source is None:
        raise UsageError("no config: pass config= (a dict or a JSON/YAML path), --deepspeed_config, or run under dsrun"
                         " with --config")
    if isinstance(source, dict):
        return source, "config"
    if isinstance(source, (str, os.PathLike)):
        return load_config(source), str(Path(source))
    raise UsageError(f"config must be a dict or a path to a JSON/YAML file, got {type(source).__name__}")


def _param_groups(model: nn.Module, model_parameters, optimizer) -> list[dict[str, Any]]:
    """The client's param groups (lists of the model's parameters plus hyper-parameters)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return [dict(group) for group in optimizer.param_groups]
    params: list[Any] = list(model_parameters) if model_parameters is not None else list(model.parameters())
    if params and isinstance(params[0], dict):
        return [dict(group, params=list(group["params"])) for group in params]
    return [{"params": params}]


def _master_params(groups: list[dict[str, Any]], masters: dict[nn.Parameter, torch.Tensor]) -> list[list]:
    """Each group's master tensors, in order (frozen parameters have none)."""
    seen: set[int] = set()
    out = []
    for group in groups:
        tensors = []
        for param in group["params"]:
            if id(param) in seen:
                raise UsageError("a parameter appears in two optimizer param groups: list each parameter once")
            seen.add(id(param))
            if param in masters:
                tensors.append(masters[param])
        out.append(tensors)
    return out


def _optimizer(optimizer, cfg: RunConfig, groups: list[dict[str, Any]], strategy: Strategy,
               device: torch.device, rank0: bool):
    """The optimizer the engine steps, on its master tensors; None when neither client nor config gives one."""
    params = _master_params(groups, strategy.masters)
    if isinstance(optimizer, torch.optim.Optimizer):
        if cfg.optimizer is not None and rank0:
            say(f"warning: both a client optimizer and an \"optimizer\" section ({cfg.optimizer.type}) were given;"
                " the client optimizer is used, as in DeepSpeed")
        # The client's own object, re-pointed at the masters, so a scheduler built on it keeps driving it.
        return adopt_client_optimizer(optimizer, params)
    if optimizer is not None:
        recipe = recipe_from_client(optimizer)
    elif cfg.optimizer is not None:
        recipe = recipe_from_config(cfg.optimizer.type, cfg.optimizer.params)
    else:
        return None
    # A group of only frozen parameters is dropped, as in DeepSpeed.
    master_groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": p}
                     for g, p in zip(groups, params, strict=True) if p]
    return build_optimizer(recipe, master_groups, device)


def _strategy_context(cfg: RunConfig, placement: Placement, precision: Precision,
                      group: dist.ProcessGroup | None = None) -> StrategyContext:
    zero = cfg.zero
    # "nvme" offloads to CPU memory too (the config warns about it); stage 0 has nothing to offload.
    offloads = [o for o in (zero.offload_optimizer, zero.offload_param) if o is not None and o.device != "none"]
    offload = zero.stage > 0 and bool(offloads)
    pin = all(o.pin_memory for o in offloads)
    return StrategyContext(
        placement=placement,
        precision=precision,
        stage=zero.stage,
        reduce_bucket_elements=int(zero.reduce_bucket_size),
        gather_bucket_elements=int(zero.allgather_bucket_size),
        unit_elements=int(zero.prefetch_bucket_size),
        offload_cpu=offload,
        offload_pinned=offload and placement.device.type == "cuda" and pin,
        reduction=grad_reduction(cfg, placement.world_size, precision.param_dtype, zero.stage),
        allow_unused=zero.ignore_unused_parameters,
        group=group,
    )


def initialize(
    args=None,
    model: nn.Module | None = None,
    optimizer=None,
    model_parameters=None,
    training_data=None,
    lr_scheduler=None,
    distributed_port: int | None = None,
    mpu=None,
    dist_init_required: bool | None = None,
    collate_fn=None,
    config=None,
    mesh_param=None,
    config_params=None,
):
    """Returns `(engine, optimizer, training_dataloader, lr_scheduler)`, as `deepspeed.initialize` does.

    A mistake in the arguments or the config ends the process with one line on rank 0 and exit code 2 (the
    launcher's convention), not a traceback from every rank.
    """
    with exit_on_usage_error():
        return _initialize(args, model, optimizer, model_parameters, training_data, lr_scheduler, mpu,
                           dist_init_required, collate_fn, config, mesh_param, config_params)


def _initialize(args, model, optimizer, model_parameters, training_data, lr_scheduler, mpu, dist_init_required,
                collate_fn, config, mesh_param, config_params):
    if model is None:
        raise UsageError("dsrun.initialize needs model=")
    if mpu is not None or mesh_param is not None:
        raise UsageError("model parallelism (mpu=, mesh_param=) is not supported by dsrun: data parallel only")
    raw, source = _raw_config(args, config, config_params)
    cfg = parse_run_config(raw, source=source)
    placement = init_distributed(dist_init_required=dist_init_required)
    pipe = pipeline_layout(model, cfg, placement)  # None unless the model is a PipelineModule
    replicas = pipe.data_placement if pipe is not None else placement  # the ranks that average gradients
    batch = cfg.batch(replicas.world_size)
    rank0 = placement.rank == 0
    if rank0:
        for warning in cfg.warnings:
            say(f"warning: {warning}")
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    # The config's activation_checkpointing section takes effect without the script calling configure() (in DeepSpeed
    # it does nothing then); a later configure() call still overrides it.
    configure_from(cfg.activation_checkpointing)

    precision = choose_precision(cfg, placement.device)
    if cfg.zero.stage < 3 and sharded_by_stage3(model):
        raise UsageError(f"the model was sharded by an earlier ZeRO stage 3 engine and cannot be used at stage"
                         f" {cfg.zero.stage}: build a fresh model, or use stage 3 again")
    on_meta = is_meta(model)
    if on_meta:
        check_initialisable(model)
    if cfg.zero.stage < 3:
        if on_meta:
            materialize(model, placement.device)  # rank 0's values reach every rank through the strategy
        model.to(placement.device)
        if precision.half:
            model.to(precision.param_dtype)  # as DeepSpeed casts the module
    # Stage 3 is sharded first: fully_shard moves each rank's shards to its device, so no rank holds the whole model.
    groups = _param_groups(model, model_parameters, optimizer)
    # The checkpoint's names, taken before wrapping renames anything: the same for any partition of a pipeline, and
    # experts by their global index, the same at any expert-parallel size.
    param_names = model.checkpoint_names() if pipe is not None else expert_checkpoint_names(model)
    prepare_experts(model, cfg, pipelined=pipe is not None)
    if pipe is not None:
        pipe.agree_tied_weights()
    strategy = make_strategy(model, _strategy_context(cfg, replicas, precision, pipe and pipe.groups.data))
    if on_meta and cfg.zero.stage == 3:
        materialize_sharded(model, placement.device)

    torch_optimizer = _optimizer(optimizer, cfg, groups, strategy, placement.device, rank0)
    if isinstance(torch_optimizer, Lamb) and cfg.zero.stage in (1, 2) and replicas.world_size > 1:
        # Row shards: Lamb's per-tensor norms are summed over the ranks holding the rows.
        torch_optimizer.norm_group = pipe.groups.data if pipe is not None else "world"
    if torch_optimizer is not None:
        check_shardable(torch_optimizer, cfg.zero.stage, cfg.zero_allow_untested_optimizer,
                        lambda m: rank0 and say(f"warning: {m}"))
    elif cfg.zero.stage in (1, 2):  # they shard the optimizer; stage 3 without one runs forward only, as DeepSpeed's
        raise UsageError(f"ZeRO stage {cfg.zero.stage} needs an optimizer: add an \"optimizer\" section or pass"
                         " optimizer= to dsrun.initialize")

    scheduler = _scheduler(cfg, lr_scheduler, torch_optimizer)
    loss_scaler = _loss_scaler(cfg, precision)
    loader = None
    if training_data is not None:
        loader = DistributedLoader(
            training_data, batch_size=batch.train_micro_batch_size_per_gpu, rank=replicas.rank,
            world_size=replicas.world_size, seed=cfg.seed or 0, drop_last=cfg.dataloader_drop_last,
            collate_fn=collate_fn, pin_memory=placement.device.type == "cuda",
            shuffle=pipe is None,  # DeepSpeed's pipeline engine reads its training_data in order
        )
    monitor = build_monitor(cfg, placement)  # rank 0's CSV/TensorBoard/wandb recorder, or None
    engine_args = dict(model=model, strategy=strategy, cfg=cfg, batch=batch, placement=placement, precision=precision,
                       optimizer=torch_optimizer, lr_scheduler=scheduler, loss_scaler=loss_scaler,
                       param_names=param_names, dataloader=loader, monitor=monitor, monitoring=monitor_enabled(cfg))
    engine = pipe.engine(**engine_args) if pipe is not None else Engine(**engine_args)
    if cfg.dump_state and rank0:
        _dump_state(engine, cfg, strategy)
    engine._autosave.resume(engine)  # checkpoint.auto_resume: before the script reads a step or a batch
    return engine, torch_optimizer, loader, scheduler


def _scheduler(cfg: RunConfig, client_scheduler, optimizer):
    if client_scheduler is not None:
        if callable(client_scheduler) and not hasattr(client_scheduler, "step"):
            return client_scheduler(optimizer)
        return client_scheduler
    if cfg.scheduler is None or optimizer is None:
        return None
    from dsrun.config.optim_section import DEEPSPEED_SCHEDULERS
    from dsrun.runtime.schedules import build_scheduler

    # "auto" is for Hugging Face's Trainer to fill in before initialize() sees the config; one still here was not, and
    # a parameter the schedule cannot do without has no default to fall back on.
    required, _ = DEEPSPEED_SCHEDULERS.get(cfg.scheduler.type, ((), ()))
    unfilled = [name for name in required if name in cfg.scheduler.auto_params]
    if unfilled:
        raise UsageError(f"scheduler.params.{unfilled[0]} is \"auto\", and nothing filled it in (Hugging Face's"
                         f" Trainer does, from its arguments): give {cfg.scheduler.type} a number")
    return build_scheduler(optimizer, cfg.scheduler.type, cfg.scheduler.params)


def _loss_scaler(cfg: RunConfig, precision: Precision):
    if not precision.loss_scaling:
        return None
    from dsrun.runtime.loss_scaler import make_loss_scaler

    if precision.static_loss_scale is not None:
        return make_loss_scaler(loss_scale=precision.static_loss_scale)
    fp16 = cfg.fp16
    return make_loss_scaler(
        loss_scale=fp16.loss_scale,
        initial_scale_power=fp16.initial_scale_power,
        loss_scale_window=fp16.loss_scale_window,
        hysteresis=fp16.hysteresis,
        consecutive_hysteresis=fp16.consecutive_hysteresis,
        min_loss_scale=fp16.min_loss_scale,
    )


def _dump_state(engine: Engine, cfg: RunConfig, strategy: Strategy) -> None:
    choices = {
        "world_size": engine.world_size,
        "device": str(engine.device),
        "backend": engine.placement.backend,
        "zero_stage": cfg.zero.stage,
        "strategy": type(strategy).__name__,
        "precision": engine.precision.name,
        "optimizer": type(engine.optimizer).__name__ if engine.optimizer is not None else None,
        "lr_scheduler": type(engine.lr_scheduler).__name__ if engine.lr_scheduler is not None else None,
        "loss_scale": engine.loss_scale if engine.loss_scaler is not None else None,
        "batch": engine.batch.to_dict(),
        "gradient_clipping": cfg.gradient_clipping,
    }
    say("engine state:\n" + json.dumps({"config": cfg.raw, "choices": choices}, indent=2, default=str))
