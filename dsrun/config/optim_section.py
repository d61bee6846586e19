"""The `optimizer` and `scheduler` sections: a type name and the keyword arguments for its constructor.

Parameters written as "auto" are left out of `params` and listed in `auto_params`: the engine derives what it can
(HF Transformers fills them from its training arguments) and otherwise the class's own default applies.
DeepSpeed's own schedulers have fixed signatures, so their parameter names are checked here, where a typo would
otherwise only surface as a TypeError once training starts. Optimizer names are looked up by the engine, which
has torch to ask.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from dsrun.config.checks import show
from dsrun.config.validate import is_unset
from dsrun.errors import UsageError

_WARMUP = ("warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "last_batch_iteration")

# DeepSpeed scheduler name -> (required parameters, optional parameters). Names are matched case-sensitively.
DEEPSPEED_SCHEDULERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "WarmupLR": ((), _WARMUP),
    "WarmupDecayLR": (("total_num_steps",), _WARMUP),
    "WarmupCosineLR": (("total_num_steps",), ("warmup_min_ratio", "warmup_num_steps", "cos_min_ratio",
                                              "warmup_type", "last_batch_iteration")),
    "OneCycle": (("cycle_min_lr", "cycle_max_lr"), (
        "decay_lr_rate", "cycle_first_step_size", "cycle_second_step_size", "cycle_first_stair_count",
        "cycle_second_stair_count", "decay_step_size", "cycle_momentum", "cycle_min_mom", "cycle_max_mom",
        "decay_mom_rate", "last_batch_iteration")),
    "LRRangeTest": ((), ("lr_range_test_min_lr", "lr_range_test_step_size", "lr_range_test_step_rate",
                         "lr_range_test_staircase", "last_batch_iteration")),
}


@dataclass(frozen=True)
class OptimizerConfig:
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    auto_params: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchedulerConfig:
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    auto_params: tuple[str, ...] = ()


def _split_auto(raw_params: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    if not isinstance(raw_params, Mapping):
        return {}, ()
    given = {key: value for key, value in raw_params.items() if not is_unset(value)}
    auto = tuple(key for key, value in raw_params.items() if isinstance(value, str) and value == "auto")
    return given, auto


def _missing_type_note(name: str) -> str:
    return (f"{name} is accepted but dsrun does not act on it: it has no {name}.type, so no {name} is built"
            f" (as in DeepSpeed); name one, e.g. \"type\": \"{'AdamW' if name == 'optimizer' else 'WarmupLR'}\"")


def build_optimizer(clean: Mapping[str, Any], raw: Any, notes: list[str]) -> OptimizerConfig | None:
    """From the clean section (for the type) and the raw one (to tell "auto" params from absent ones)."""
    if not clean and not isinstance(raw, Mapping):
        return None
    if "type" not in clean:
        notes.append(_missing_type_note("optimizer"))
        return None
    params, auto = _split_auto(raw.get("params"))
    if "max_grad_norm" in params:
        raise UsageError(
            "optimizer.params.max_grad_norm is not an optimizer parameter: move it to the top-level key"
            f' "gradient_clipping": {show(params["max_grad_norm"])}'
        )
    return OptimizerConfig(type=clean["type"], params=params, auto_params=auto)


def build_scheduler(clean: Mapping[str, Any], raw: Any, notes: list[str]) -> SchedulerConfig | None:
    if not clean and not isinstance(raw, Mapping):
        return None
    if "type" not in clean:
        notes.append(_missing_type_note("scheduler"))
        return None
    name = clean["type"]
    params, auto = _split_auto(raw.get("params"))
    _check_scheduler_name(name)
    if name in DEEPSPEED_SCHEDULERS:
        _check_scheduler_params(name, [*params, *auto])
    return SchedulerConfig(type=name, params=params, auto_params=auto)


def _check_scheduler_name(name: str) -> None:
    """DeepSpeed looks its scheduler names up case-sensitively; "warmuplr" would fall through to torch and fail."""
    for known in DEEPSPEED_SCHEDULERS:
        if name != known and name.lower() == known.lower():
            raise UsageError(f'scheduler.type "{name}" is not a scheduler: did you mean "{known}"?'
                             " (scheduler names are case-sensitive)")


def _check_scheduler_params(name: str, given: list[str]) -> None:
    required, optional = DEEPSPEED_SCHEDULERS[name]
    accepted = (*required, *optional)
    for key in given:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean scheduler.params.{close[0]}?" if close else f"{name} takes {', '.join(accepted)}"
            raise UsageError(f"scheduler.params.{key} is not a parameter of {name}: {hint}")
    for key in required:
        if key not in given:
            raise UsageError(f'{name} needs scheduler.params.{key}: give a value (or "auto" to have it derived)')
