"""The optimizer the engine steps: built from the config or adopted from the client (build.py), and DeepSpeed's Lamb
in plain torch (lamb.py)."""

from dsrun.runtime.optim.build import (
    ELEMENTWISE,
    SHARD_EXACT,
    adopt_client_optimizer,
    build_optimizer,
    check_shardable,
    recipe_from_client,
    recipe_from_config,
)
from dsrun.runtime.optim.lamb import Lamb

__all__ = ["ELEMENTWISE", "SHARD_EXACT", "Lamb", "adopt_client_optimizer", "build_optimizer", "check_shardable",
           "recipe_from_client", "recipe_from_config"]
