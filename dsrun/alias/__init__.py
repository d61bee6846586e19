"""`import deepspeed` resolving to dsrun, for scripts whose `from deepspeed.X import Y` lines `import dsrun as
deepspeed` cannot reach. Opt-in: `dsrun --deepspeed-alias train.py ...` or `python -m dsrun.alias train.py ...`.

`install()` puts dsrun in sys.modules as `deepspeed` and a finder in front of the import system that answers every
`deepspeed.*` name: with the dsrun module that provides it (the same module object, so no state is duplicated), or
with one line naming what is missing and what to use instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# DeepSpeed module -> the dsrun module that provides what scripts import from it.
MODULES: dict[str, str] = {
    "deepspeed.accelerator": "dsrun.accelerator",
    "deepspeed.comm": "dsrun.comm",
    "deepspeed.utils": "dsrun.utils",
    "deepspeed.utils.logging": "dsrun.utils.logging",
    "deepspeed.runtime": "dsrun.runtime",
    "deepspeed.runtime.utils": "dsrun.runtime.utils",
    "deepspeed.runtime.dataloader": "dsrun.runtime.dataloader",
    "deepspeed.runtime.config": "dsrun.runtime.ds_config",
    "deepspeed.runtime.lr_schedules": "dsrun.runtime.schedules",
    "deepspeed.zero": "dsrun.zero",
    "deepspeed.runtime.zero": "dsrun.zero",
    "deepspeed.runtime.zero.partition_parameters": "dsrun.zero",
    "deepspeed.moe": "dsrun.moe",
    "deepspeed.moe.layer": "dsrun.moe.layer",
    "deepspeed.moe.utils": "dsrun.moe.utils",
    "deepspeed.moe.sharded_moe": "dsrun.moe.sharded_moe",
    "deepspeed.moe.experts": "dsrun.moe.experts",
    "deepspeed.utils.groups": "dsrun.moe.groups",
    "deepspeed.pipe": "dsrun.pipe",
    "deepspeed.runtime.pipe": "dsrun.pipe",
    "deepspeed.checkpointing": "dsrun.checkpointing",
    "deepspeed.inference": "dsrun.inference",
    "deepspeed.inference.engine": "dsrun.inference.engine",
    "deepspeed.runtime.activation_checkpointing": "dsrun.checkpointing",
    "deepspeed.runtime.activation_checkpointing.checkpointing": "dsrun.checkpointing",
}

# What to use instead of DeepSpeed modules dsrun does not have (the most imported ones; others get a general line).
INSTEAD: dict[str, str] = {
    "deepspeed.ops": "dsrun has no custom kernels: use torch.optim.Adam/AdamW (dsrun steps them with torch's fused"
    " kernels, on CPU and CUDA), the config's Lamb (dsrun.runtime.optim.lamb.Lamb) and torch's own layers",
    "deepspeed.module_inject": "dsrun does not replace modules with kernels; the model runs as written",
    "deepspeed.compression": "dsrun has no compression library: the model trains unquantized",
    "deepspeed.profiling": "use torch.profiler",
    "deepspeed.inference.v2": "dsrun has no FastGen (inference v2) engine: use deepspeed.init_inference",
    "deepspeed.utils.zero_to_fp32": "`dsrun consolidate CHECKPOINT_DIR OUT.pt` writes a checkpoint's fp32 weights as"
    " one file",
}


def _missing(name: str) -> ModuleNotFoundError:
    for prefix, advice in INSTEAD.items():
        if name == prefix or name.startswith(prefix + "."):
            return ModuleNotFoundError(f"{name} is not provided by dsrun (standing in for DeepSpeed): {advice}",
                                       name=name)
    provided = ", ".join(sorted(MODULES))
    return ModuleNotFoundError(f"{name} is not provided by dsrun (standing in for DeepSpeed); it provides deepspeed"
                               f" itself and {provided}", name=name)


class _Existing(importlib.abc.Loader):
    """Loads an alias as the dsrun module it names (create_module returns that very module)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its own name


class DeepSpeedAlias(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != "deepspeed" and not fullname.startswith("deepspeed."):
            return None
        if fullname == "deepspeed":
            return importlib.machinery.ModuleSpec(fullname, _Existing("dsrun"))
        module = MODULES.get(fullname)
        if module is None:
            raise _missing(fullname)
        # A package only where the dsrun module is one: the import system gives a "package" spec's module a __path__.
        is_package = hasattr(importlib.import_module(module), "__path__")
        return importlib.machinery.ModuleSpec(fullname, _Existing(module), is_package=is_package)


def install() -> None:
    """Make `import deepspeed` and `from deepspeed.X import Y` load dsrun (idempotent)."""
    if not any(isinstance(finder, DeepSpeedAlias) for finder in sys.meta_path):
        sys.meta_path.insert(0, DeepSpeedAlias())
    sys.modules.setdefault("deepspeed", importlib.import_module("dsrun"))
