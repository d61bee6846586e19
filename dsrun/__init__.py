"""dsrun: a launcher and job runner for PyTorch distributed training that speaks DeepSpeed's CLI and config.

Importing the package stays cheap (no torch): the launcher imports it on login nodes. The training API
(`initialize`, `init_inference`, `init_distributed`, `comm`, `utils`, `accelerator`, ...) loads on first use, so
`import dsrun as deepspeed` works.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
# DeepSpeed's version parts, which scripts compare against (e.g. `deepspeed.__version_major__ >= 0`).
__version_major__, __version_minor__, __version_patch__ = (int(part) for part in __version__.split("."))

_LAZY = {
    "initialize": ("dsrun.runtime.initialize", "initialize"),
    "init_inference": ("dsrun.inference", "init_inference"),
    "init_distributed": ("dsrun.runtime.distributed", "init_distributed"),
    "add_config_arguments": ("dsrun.arguments", "add_config_arguments"),
    "comm": ("dsrun.comm", None),
    "utils": ("dsrun.utils", None),
    "accelerator": ("dsrun.accelerator", None),
    "runtime": ("dsrun.runtime", None),
    "zero": ("dsrun.zero", None),
    "checkpointing": ("dsrun.checkpointing", None),
    "pipe": ("dsrun.pipe", None),
    "moe": ("dsrun.moe", None),
    "inference": ("dsrun.inference", None),
    "OnDevice": ("dsrun.runtime.on_device", "OnDevice"),
    "DeepSpeedConfig": ("dsrun.runtime.ds_config", "DeepSpeedConfig"),
    "get_accelerator": ("dsrun.accelerator", "get_accelerator"),
}

__all__ = ["__version__", "__version_major__", "__version_minor__", "__version_patch__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in ("__git_hash__", "__git_branch__"):  # known when dsrun runs from a git checkout
        from dsrun import _git

        return _git.git_hash() if name == "__git_hash__" else _git.git_branch()
    if name not in _LAZY:
        raise AttributeError(f"module 'dsrun' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module
