"""Build the user's model on the meta device and describe it: parameter counts, the largest layer, stage 3's units.

Runs in its own process (`python -m dsrun.probe`), so the launcher that asked never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dsrun.errors import UsageError

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32, "bool": torch.bool,
}


def load_factory(spec: str) -> Callable[[], object]:
    """MODULE:FACTORY, MODULE a dotted name importable from the working directory or a path to a .py file."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise UsageError(f"--model {spec!r}: write MODULE:FACTORY, e.g. mymodels:build_gpt or models.py:build")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise UsageError(f"--model {spec!r}: {path} does not exist")
        sys.path.insert(0, str(path.resolve().parent))  # its own imports of sibling modules work as when run
        loaded = importlib.util.spec_from_file_location(path.stem, path)
        assert loaded is not None and loaded.loader is not None
        module = importlib.util.module_from_spec(loaded)
        sys.modules[path.stem] = module
        loaded.loader.exec_module(module)
    else:  # `python -m dsrun.probe` has the working directory on sys.path already
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise UsageError(f"--model {spec!r}: cannot import {module_name} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"--model {spec!r}: {module_name} has no function {attr}")
    return factory


def build_on_meta(spec: str, dtype: torch.dtype) -> nn.Module:
    factory = load_factory(spec)
    try:
        with torch.device("meta"):
            model = factory()
    except Exception as err:  # noqa: BLE001 - the user's code: its failure is reported in one line
        raise UsageError(f"--model {spec!r}: the factory raised {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {spec!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    # As the engine does: half precision casts the module (stages 0-2 store it so; stage 3 computes in it).
    return model.to(dtype) if dtype != torch.float32 else model


def describe(model: nn.Module, blocks: list[nn.Module], units: list[list[nn.Module]]) -> dict:
    """Parameter counts, the largest leaf layer, and the largest stage-3 unit (plus the root unit's rest)."""
    params = list(model.parameters())
    largest_name, largest = "", 0
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own > largest:
            largest_name, largest = name or type(module).__name__, own
    unit_sizes = [sum(p.numel() for b in unit for p in b.parameters()) for unit in units]
    in_units = {id(p) for b in blocks for p in b.parameters()}
    return {
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "largest_layer": {"name": largest_name, "parameters": largest},
        "units": len(unit_sizes),
        "largest_unit_parameters": max(unit_sizes, default=0),
        "root_unit_parameters": sum(p.numel() for p in params if id(p) not in in_units),
    }


def example_inputs(text: str, float_dtype: torch.dtype) -> tuple:
    """'4x512:int64,4x512' -> meta tensors; floating ones in the run's dtype (the engine casts inputs so)."""
    tensors = []
    for item in text.split(","):
        shape_text, _, dtype_name = item.strip().partition(":")
        dtype = DTYPES.get(dtype_name.strip().lower() or "fp32")
        dims = shape_text.lower().split("x")
        if dtype is None or not all(d.strip().isdigit() and int(d) > 0 for d in dims):
            raise UsageError(f"--model-input {text!r}: write shapes like 4x512:int64 (dtypes: {', '.join(DTYPES)}),"
                             " several separated by commas")
        if dtype.is_floating_point:
            dtype = float_dtype
        tensors.append(torch.empty([int(d) for d in dims], dtype=dtype, device="meta"))
    return tuple(tensors)
