"""The training half of dsrun: the engine that applies the run config. Imports torch."""

from __future__ import annotations

import importlib
from types import ModuleType

# Reached as attributes by DeepSpeed scripts (`deepspeed.runtime.utils.set_random_seed(seed)` after `import deepspeed`).
_SUBMODULES = {"utils": "utils", "lr_schedules": "schedules", "ds_config": "ds_config"}


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"dsrun.runtime.{_SUBMODULES[name]}")
    raise AttributeError(f"module 'dsrun.runtime' has no attribute {name!r}")
