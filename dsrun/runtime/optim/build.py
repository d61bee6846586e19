"""The optimizer: from the config's `optimizer` section or the client's, on the tensors the engine steps.

Sharded stages step shards of parameters, not the model's own tensors. A config optimizer (or a client callable)
is described as a recipe and built on the master tensors; a client optimizer instance is kept and re-pointed at
them, so LR schedulers the client built on it still drive the optimizer that is stepped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from dsrun.errors import UsageError
from dsrun.runtime.optim.lamb import Lamb

# DeepSpeed's own optimizer names (case-insensitive there) that need its fused kernels; dsrun has no equivalent.
_DEEPSPEED_ONLY = ("lion", "muadam", "muadamw", "musgd", "muon", "onebitadam", "zerooneadam", "onebitlamb")

# Optimizers whose update of an element depends only on that element's own history, so stepping a shard of a
# parameter is exactly stepping the whole parameter. Others (LBFGS, per-tensor norms) are "untested" under ZeRO.
ELEMENTWISE = (
    torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.Adagrad, torch.optim.RMSprop,
    torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adadelta, torch.optim.ASGD,
)

# Not element-wise (per-tensor norms), but exact on shards: its norms are summed over the ranks holding them (Lamb's
# norm_group for row shards, a DTensor's mesh for stage 3). Not in ELEMENTWISE: the engine must step it with every
# gradient at once, never chunk by chunk.
SHARD_EXACT = (Lamb,)


@dataclass
class OptimizerRecipe:
    cls: type[torch.optim.Optimizer] | None
    defaults: dict[str, Any]
    factory: Callable | None = None  # a client callable(params) -> Optimizer

    @property
    def name(self) -> str:
        return self.cls.__name__ if self.cls is not None else "client callable"


def _torch_class(name: str) -> type[torch.optim.Optimizer] | None:
    candidate = getattr(torch.optim, name, None)
    if isinstance(candidate, type) and issubclass(candidate, torch.optim.Optimizer):
        return candidate
    return None


def _torch_choices() -> str:
    return ", ".join(sorted(n for n in dir(torch.optim) if _torch_class(n) and n != "Optimizer"))


def recipe_from_config(type_name: str, params: dict[str, Any]) -> OptimizerRecipe:
    if type_name.lower() == "lamb":
        # DeepSpeed passes the params to FusedLamb as they are: an Adam-only key there is a bad parameter here.
        return OptimizerRecipe(Lamb, dict(params))
    params = dict(params)
    adam_w_mode = params.pop("adam_w_mode", True)
    torch_adam = params.pop("torch_adam", False)  # dsrun always steps torch's Adam; the flag chose the implementation
    lowered = type_name.lower()
    cls: type[torch.optim.Optimizer] | None
    if lowered in ("adam", "adamw"):
        # DeepSpeed: "Adam" means decoupled weight decay unless adam_w_mode is false; "AdamW" always does.
        cls = torch.optim.AdamW if lowered == "adamw" or adam_w_mode else torch.optim.Adam
        if not torch_adam:
            # DeepSpeed's own Adams (FusedAdam, DeepSpeedCPUAdam) decay nothing unless told; torch's AdamW decays by
            # 0.01 by default, which DeepSpeed keeps only with torch_adam true.
            params.setdefault("weight_decay", 0.0)
    elif lowered == "adagrad":
        cls = torch.optim.Adagrad
    elif lowered in _DEEPSPEED_ONLY:
        raise UsageError(
            f"optimizer.type {type_name!r} needs DeepSpeed's fused kernels, which dsrun does not have:"
            f" use Adam, AdamW, Lamb or a torch.optim class ({_torch_choices()})"
        )
    else:
        cls = _torch_class(type_name)
        if cls is None:
            raise UsageError(
                f"optimizer.type {type_name!r} is not known: use Adam, AdamW, Adagrad, Lamb or a torch.optim class"
                f" by its exact name ({_torch_choices()})"
            )
    return OptimizerRecipe(cls, params)


def recipe_from_client(optimizer: Any) -> OptimizerRecipe:
    """A client callable(params) -> Optimizer (an instance is adopted instead, see adopt_client_optimizer)."""
    if callable(optimizer):
        return OptimizerRecipe(None, {}, factory=optimizer)
    raise UsageError(f"optimizer must be a torch.optim.Optimizer or a callable(params), got {type(optimizer).__name__}")


def adopt_client_optimizer(optimizer: torch.optim.Optimizer, params: list[list[torch.Tensor]]):
    """Re-point each of the client's param groups at the engine's master tensors (`params`, group by group) and
    drop any state kept for the old tensors."""
    for group, tensors in zip(optimizer.param_groups, params, strict=True):
        group["params"] = list(tensors)
    optimizer.state.clear()
    return optimizer


def build_optimizer(recipe: OptimizerRecipe, groups: list[dict[str, Any]], device: torch.device):
    """Build the optimizer on `groups` (dicts with "params" and their hyper-parameters)."""
    if recipe.factory is not None:
        return recipe.factory(groups)
    # A torch optimizer class; its keyword arguments come from the user's optimizer.params.
    make: Any = recipe.cls
    defaults = dict(recipe.defaults)
    fusable = recipe.cls in (torch.optim.Adam, torch.optim.AdamW) and device.type in ("cuda", "cpu")
    if fusable and not {"fused", "foreach"} & defaults.keys():
        # torch's fused Adam kernels: on this CPU a 5.3M-parameter AdamW step took 3.8 ms fused, 21.5 ms foreach.
        try:
            return make(groups, **defaults, fused=True)
        except (RuntimeError, ValueError, TypeError):
            pass  # a dtype or tensor kind the fused kernel does not take: the default implementation does
    try:
        return make(groups, **defaults)
    except TypeError as err:
        raise UsageError(f"optimizer {recipe.name}: bad parameter in optimizer.params ({err})") from None
    except ValueError as err:
        raise UsageError(f"optimizer {recipe.name}: {err}") from None


def check_shardable(optimizer: torch.optim.Optimizer, stage: int, allow_untested: bool, warn) -> None:
    """Refuse (or, when allowed, warn about) a ZeRO-sharded optimizer whose update is not element-wise and that
    does not make its per-tensor statistics whole itself (Lamb does)."""
    if stage == 0 or isinstance(optimizer, ELEMENTWISE + SHARD_EXACT):
        return
    name = type(optimizer).__name__
    if not allow_untested:
        raise UsageError(
            f"ZeRO stage {stage} shards the optimizer, which is exact only for element-wise optimizers (Adam, AdamW,"
            f" SGD, Adagrad, RMSprop, ...) and Lamb; {name} is not one: set \"zero_allow_untested_optimizer\": true"
            " to run it anyway, or use stage 0"
        )
    warn(f"{name} runs sharded under ZeRO stage {stage}: per-tensor statistics see only this rank's shard")
