"""dsrun: a launcher and job runner for PyTorch distributed training that speaks DeepSpeed's CLI and config.

Importing the package stays cheap (no torch): the launcher imports it on login nodes. The training API
(`initialize`, `init_distributed`, `comm`, `utils`) loads on first use, so `import dsrun as deepspeed` works.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "initialize": ("dsrun.runtime.initialize", "initialize"),
    "init_distributed": ("dsrun.runtime.distributed", "init_distributed"),
    "add_config_arguments": ("dsrun.arguments", "add_config_arguments"),
    "comm": ("dsrun.comm", None),
    "utils": ("dsrun.utils", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dsrun' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module
