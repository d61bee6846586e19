"""LayerSpec and TiedLayerSpec: a layer recorded as (class, arguments) so only the stage that runs it builds it.

A model of billions of parameters split over stages must not be built whole on every rank; a spec costs nothing until
`build()`. PipelineModule calls `build()` for its own stage's layers only (and counts parameters of the others on the
meta device, which allocates nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dsrun.errors import UsageError


def _call_repr(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = [repr(a) for a in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"{name}({', '.join(shown)})"


class LayerSpec:
    """`LayerSpec(cls, *args, **kwargs)`: `build()` returns `cls(*args, **kwargs)`; cls must be an nn.Module class."""

    def __init__(self, typename: type[nn.Module], *module_args: Any, **module_kwargs: Any):
        if not (isinstance(typename, type) and issubclass(typename, nn.Module)):
            raise UsageError(f"LayerSpec({typename!r}, ...): the first argument must be an nn.Module class")
        # DeepSpeed's attribute names: scripts and tools read them (e.g. typename.__name__ to name a layer).
        self.typename = typename
        self.module_args = module_args
        self.module_kwargs = module_kwargs

    def build(self) -> nn.Module:
        """Construct the layer (on the current default device: the meta device when PipelineModule only counts)."""
        return self.typename(*self.module_args, **self.module_kwargs)

    def __repr__(self) -> str:
        return _call_repr(self.typename.__name__, self.module_args, self.module_kwargs)


class TiedLayerSpec(LayerSpec):
    """A layer whose weights are shared by every position listing the same `key` (e.g. the input embedding reused as
    the output projection). Each stage holding the key builds one copy; `forward_fn(module, x)`, when given, is
    called instead of `module(x)` at that position; `tied_weight_attr` names the shared parameters (a dotted path
    such as "linear.weight" reaches into submodules), whose gradients the engine sums over the stages holding them."""

    def __init__(self, key: str, typename: type[nn.Module], *module_args: Any,
                 forward_fn: Callable[..., Any] | None = None, tied_weight_attr: str | list[str] = "weight",
                 **module_kwargs: Any):
        super().__init__(typename, *module_args, **module_kwargs)
        if not isinstance(key, str) or not key or "." in key:
            raise UsageError(f"TiedLayerSpec key {key!r}: it must be a non-empty string without '.' (it names a"
                             " submodule)")
        self.key = key
        self.forward_fn = forward_fn
        self.tied_weight_attr = [tied_weight_attr] if isinstance(tied_weight_attr, str) else list(tied_weight_attr)
