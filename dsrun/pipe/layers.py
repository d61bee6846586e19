"""What PipelineModule needs to know about a layer before deciding whether to build it: its name and its trainable
parameter count. A layer is an nn.Module, a LayerSpec/TiedLayerSpec, or a plain callable (lambda, function)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dsrun.pipe.spec import LayerSpec, TiedLayerSpec


def layer_name(layer: Any) -> str | None:
    """The name "type:REGEX" partitioning matches, as DeepSpeed's _find_layer_type: the class name of a spec or
    module, the __name__ of a function ("<lambda>" for a lambda); None when a callable object has no __name__ (it
    never matches a type regex). The report shows display_name instead."""
    if isinstance(layer, LayerSpec):
        return layer.typename.__name__
    if isinstance(layer, nn.Module):
        return type(layer).__name__
    return getattr(layer, "__name__", None)


def trainable_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_spec_parameters(spec: LayerSpec) -> int:
    """Trainable parameters of the layer a spec would build, without allocating it: the spec is built on the meta
    device (shapes only) and dropped. A constructor that cannot run on meta (it reads tensor values, say) is built
    for real and dropped. Either way the RNG is left as it was, so counting does not shift the weights the real
    build draws."""
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                return trainable_count(spec.build())
        except Exception:  # any failure on meta: fall back to a real build
            return trainable_count(spec.build())


def parameter_counts(layers: Sequence[Any]) -> list[int]:
    """Trainable parameters per layer (0 for a callable), DeepSpeed's weights for partition_method="parameters".
    A TiedLayerSpec counts in full at every position it appears, as in DeepSpeed."""
    counts = []
    for layer in layers:
        if isinstance(layer, LayerSpec):
            counts.append(count_spec_parameters(layer))
        elif isinstance(layer, nn.Module):
            counts.append(trainable_count(layer))
        else:
            counts.append(0)
    return counts


def display_name(layer: Any) -> str:
    """A layer's name for people: its class or function name, "lambda" for a lambda, "Embedding[tied embed]" for
    a TiedLayerSpec of key "embed"."""
    if isinstance(layer, TiedLayerSpec):
        return f"{layer.typename.__name__}[tied {layer.key}]"
    name = layer_name(layer)
    if name is None:
        return type(layer).__name__
    return "lambda" if name == "<lambda>" else name
