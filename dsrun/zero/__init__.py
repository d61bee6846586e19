"""`dsrun.zero`: what DeepSpeed scripts use from `deepspeed.zero` and `deepspeed.runtime.zero.partition_parameters`.

dsrun's stage 3 keeps each parameter as an FSDP2 shard (a DTensor) between steps. `GatheredParameters` is what
DeepSpeed scripts wrap around code that reads or changes whole parameters; it does nothing for parameters that are
not sharded (stages 0-2, or outside an engine), as in DeepSpeed. A sharded one cannot be made whole in place (the
DTensor object is what the engine steps), so it stops with a message saying how to get its whole value instead,
rather than handing the script a shard it would take for the whole.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any


class ZeroParamStatus(enum.Enum):
    """DeepSpeed's partitioned-parameter states. dsrun's parameters carry no `ds_status` (nor `ds_id`), so scripts
    that look for partitioned parameters by those attributes find none."""

    AVAILABLE = 1
    NOT_AVAILABLE = 2
    INFLIGHT = 3


def _as_list(params: Any) -> list:
    if params is None:
        return []
    if isinstance(params, Iterable) and not hasattr(params, "shape"):
        return list(params)
    return [params]


class GatheredParameters:
    def __init__(self, params: Any, modifier_rank: int | None = None, fwd_module=None, enabled: bool = True):
        self.params = _as_list(params) if enabled else []
        self.modifier_rank = modifier_rank

    def __enter__(self):
        sharded = [p for p in self.params if hasattr(p, "full_tensor")]
        if sharded:
            raise RuntimeError(
                f"GatheredParameters got {len(sharded)} ZeRO stage 3 parameter(s), which dsrun keeps as FSDP2 shards"
                " (DTensors) that cannot be made whole in place: read a whole value with `param.full_tensor()`,"
                " save whole weights with engine.save_16bit_model(), or change weights before dsrun.initialize()"
            )
        return self

    def __exit__(self, *exc) -> None:
        return None


class Init:
    """DeepSpeed's context for building a model already partitioned. dsrun's way is the meta device."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise RuntimeError(
            "deepspeed.zero.Init is not provided by dsrun: build the model on the meta device instead"
            " (`with torch.device('meta'): model = Net()`); at ZeRO stage 3 initialize() materialises it already"
            " sharded, each module through its reset_parameters()"
        )


__all__ = ["GatheredParameters", "Init", "ZeroParamStatus"]
