"""The `optimizer` and `scheduler` sections, declared: a type name and the keyword arguments for its constructor.

Parameters written as "auto" are left out of `params` and listed in `auto_params`: the engine derives what it can
(HF Transformers fills them from its training arguments) and otherwise the class's own default applies.
DeepSpeed's own schedulers have fixed signatures, so their parameter names are checked here, where a typo would
otherwise only surface as a TypeError once training starts. Optimizer names are looked up by the engine, which
has torch to ask.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Mapping

from dsrun.config.checks import boolean, mapping, show, string
from dsrun.config.declare import Section, Unacted, key
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


def _split_auto(params: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The params given a value, and the names of those written as "auto" (null ones take the class default)."""
    auto = tuple(name for name, value in params.items() if isinstance(value, str) and value == "auto")
    return {name: value for name, value in params.items() if value is not None and name not in auto}, auto


@dataclass(frozen=True)
class OptimizerConfig(Section):
    type: str = key(string, "")  # "": the section names no type, and no optimizer is built (as in DeepSpeed)
    params: dict[str, Any] = key(mapping, {})
    auto_params: tuple[str, ...] = ()  # not a key: the params written as "auto"

    unacted: ClassVar[Mapping[str, Unacted]] = {
        "legacy_fusion": Unacted(boolean, "dsrun builds torch optimizers, which have no legacy fused mode"),
        "torch_adam": Unacted(boolean, "dsrun always steps torch's Adam/AdamW (fused where torch has the kernel),"
                              " as DeepSpeed does with torch_adam true"),
    }

    def settle(self, clean: Mapping[str, Any], notes: list[str]) -> OptimizerConfig:
        params, auto = _split_auto(self.params)
        if "max_grad_norm" in params:
            raise UsageError(
                "optimizer.params.max_grad_norm is not an optimizer parameter: move it to the top-level key"
                f' "gradient_clipping": {show(params["max_grad_norm"])}'
            )
        return replace(self, params=params, auto_params=auto)


@dataclass(frozen=True)
class SchedulerConfig(Section):
    type: str = key(string, "")  # "": no scheduler is built
    params: dict[str, Any] = key(mapping, {})
    auto_params: tuple[str, ...] = ()  # not a key: the params written as "auto"

    def settle(self, clean: Mapping[str, Any], notes: list[str]) -> SchedulerConfig:
        params, auto = _split_auto(self.params)
        if self.type:
            _check_scheduler_name(self.type)
            if self.type in DEEPSPEED_SCHEDULERS:
                _check_scheduler_params(self.type, [*params, *auto])
        return replace(self, params=params, auto_params=auto)


def missing_type_note(name: str) -> str:
    return (f"{name} is accepted but dsrun does not act on it: it has no {name}.type, so no {name} is built"
            f" (as in DeepSpeed); name one, e.g. \"type\": \"{'AdamW' if name == 'optimizer' else 'WarmupLR'}\"")


def _check_scheduler_name(name: str) -> None:
    """DeepSpeed looks its scheduler names up case-sensitively; "warmuplr" would fall through to torch and fail."""
    for known in DEEPSPEED_SCHEDULERS:
        if name != known and name.lower() == known.lower():
            raise UsageError(f'scheduler.type "{name}" is not a scheduler: did you mean "{known}"?'
                             " (scheduler names are case-sensitive)")


def _check_scheduler_params(name: str, given: list[str]) -> None:
    required, optional = DEEPSPEED_SCHEDULERS[name]
    accepted = (*required, *optional)
    for param in given:
        if param not in accepted:
            close = difflib.get_close_matches(param, accepted, n=1)
            hint = f"did you mean scheduler.params.{close[0]}?" if close else f"{name} takes {', '.join(accepted)}"
            raise UsageError(f"scheduler.params.{param} is not a parameter of {name}: {hint}")
    for param in required:
        if param not in given:
            raise UsageError(f'{name} needs scheduler.params.{param}: give a value (or "auto" to have it derived)')
