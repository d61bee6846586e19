"""LR schedules from the config's `"scheduler": {"type": ..., "params": {...}}`, as DeepSpeed 0.19.8 builds them.

`build_scheduler(optimizer, type_name, params)` is the entry point. `type_name` is one of DeepSpeed's schedules
(WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest) or, with exact case, a class of
`torch.optim.lr_scheduler` such as StepLR; `params` become its keyword arguments.

Timing. The engine steps the scheduler once per *applied* optimizer step (an fp16 overflow skips both the update
and the scheduler step). DeepSpeed's schedules write the lr for iteration -1 at construction and each `step()`
comes after an update, so the n-th optimizer update (1-based) runs with the lr of `last_batch_iteration = n - 2`:
update 1 uses the constructor's value, update 2 the value for iteration 0, and so on. A torch scheduler already
takes its first step in its constructor, so there update n uses `last_epoch = n - 1`.

Resuming: build the scheduler first, then `load_state_dict`; the next `step()` gives the same lr as the saved run.
Schedules that derive their base lr from the optimizer (WarmupLR without `warmup_max_lr`, WarmupCosineLR) read it
at construction, so build them before the optimizer's own state is restored, as DeepSpeed's engine does.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch
from torch.optim import lr_scheduler as torch_schedulers

from dsrun.errors import UsageError
from dsrun.runtime.schedules.base import IterationSchedule, did_you_mean, unwrap_optimizer
from dsrun.runtime.schedules.cycle import LRRangeTest, OneCycle
from dsrun.runtime.schedules.warmup import WarmupCosineLR, WarmupDecayLR, WarmupLR

DEEPSPEED_SCHEDULES: dict[str, type[IterationSchedule]] = {
    cls.__name__: cls for cls in (WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle, LRRangeTest)
}

# torch schedulers a JSON config cannot drive, and why; the user can still build them in Python.
_NOT_FROM_CONFIG = {
    "LambdaLR": "needs a Python function (lr_lambda)",
    "MultiplicativeLR": "needs a Python function (lr_lambda)",
    "SequentialLR": "needs other scheduler objects",
    "ChainedScheduler": "needs other scheduler objects",
    "ReduceLROnPlateau": "needs a validation metric at every step(), which the engine does not have",
}

# Annotation strings of torch scheduler parameters whose JSON value we can check before torch uses it (torch itself
# checks few types, so a string step_size would only fail at the first step()).
_SIMPLE_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,)}

__all__ = ["DEEPSPEED_SCHEDULES", "build_scheduler", "torch_scheduler_names",
           "WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle", "LRRangeTest"]


def torch_scheduler_names() -> list[str]:
    """The public schedule classes of torch.optim.lr_scheduler (the abstract base excluded)."""
    names = []
    for name, value in vars(torch_schedulers).items():
        if (isinstance(value, type) and issubclass(value, torch_schedulers.LRScheduler)
                and not name.startswith("_") and value is not torch_schedulers.LRScheduler):
            names.append(name)
    return sorted(names)


def build_scheduler(optimizer: Any, type_name: str, params: Mapping[str, Any] | None) -> Any:
    """The scheduler the config names, built on `optimizer` (a torch optimizer, or a wrapper holding one as
    `.optimizer`). Any problem with the type or the params is a UsageError naming the scheduler and the fix."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise UsageError(f"scheduler {type_name}: params must be an object of parameter names to values, "
                         f"got {type(params).__name__}")
    torch_optimizer = unwrap_optimizer(optimizer)
    if isinstance(type_name, str) and type_name in DEEPSPEED_SCHEDULES:
        cls = DEEPSPEED_SCHEDULES[type_name]
        _check_names(type_name, cls, params)
        return cls(torch_optimizer, **params)
    if isinstance(type_name, str) and type_name in torch_scheduler_names():
        return _build_torch_scheduler(torch_optimizer, type_name, params)
    raise _unknown_type(type_name)


def _build_torch_scheduler(optimizer: torch.optim.Optimizer, type_name: str, params: Mapping[str, Any]) -> Any:
    if type_name in _NOT_FROM_CONFIG:
        raise UsageError(f"scheduler {type_name} {_NOT_FROM_CONFIG[type_name]}, which a config file cannot give; "
                         f"create it in your script and pass it to initialize() as lr_scheduler")
    cls = getattr(torch_schedulers, type_name)
    _check_names(type_name, cls, params)
    _check_simple_types(type_name, cls, params)
    try:
        return cls(optimizer, **params)
    except (TypeError, ValueError) as err:
        raise UsageError(f"scheduler {type_name} rejects its params: {err}; fix scheduler.params") from None


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword parameters a config may set: everything after (self, optimizer)."""
    signature = inspect.signature(cls.__init__)  # type: ignore[misc]  # the class's own, read from the class
    return {name: p for name, p in signature.parameters.items()
            if name not in ("self", "optimizer") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _check_names(type_name: str, cls: type, params: Mapping[str, Any]) -> None:
    known = _parameters(cls)
    for name in params:
        if name not in known:
            raise UsageError(f"scheduler {type_name} has no parameter {name!r}{did_you_mean(str(name), list(known))};"
                             f" valid parameters: {', '.join(known)}")
    for name, parameter in known.items():
        if parameter.default is inspect.Parameter.empty and name not in params:
            raise UsageError(f"scheduler {type_name} needs params.{name}; add it to the scheduler's params")


def _check_simple_types(type_name: str, cls: type, params: Mapping[str, Any]) -> None:
    for name, parameter in _parameters(cls).items():
        annotation = parameter.annotation if isinstance(parameter.annotation, str) else ""
        allow_none = annotation.endswith(" | None")
        wanted = _SIMPLE_TYPES.get(annotation.removesuffix(" | None"))
        if name not in params or wanted is None:
            continue
        value = params[name]
        if value is None and allow_none:
            continue
        if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
            kind = annotation.removesuffix(" | None")
            raise UsageError(f"scheduler {type_name}: set params.{name} to a value of type {kind} (got {value!r})")


def _unknown_type(type_name: Any) -> UsageError:
    deepspeed_names = list(DEEPSPEED_SCHEDULES)
    torch_names = [name for name in torch_scheduler_names() if name not in _NOT_FROM_CONFIG]
    hint = did_you_mean(str(type_name), deepspeed_names + torch_names)
    return UsageError(f"unknown scheduler type {type_name!r}{hint}; choose one of {', '.join(deepspeed_names)} "
                      f"or a torch.optim.lr_scheduler class (exact case): {', '.join(torch_names)}")
