"""Expert state-dict keys by global expert index, so a checkpoint loads at another ep size or world size.

In a rank's state dict the experts sit at local slots: `<layer>.deepspeed_moe.experts.deepspeed_experts.<slot>.*`,
slots 0 .. L-1 on every rank (L = num_experts // ep_size). Saved like that, every rank's experts collide on the
same keys. Keyed by global index (ep_rank * L + slot, DeepSpeed's numbering in its expert checkpoint files), every
expert has one key; loading selects the global indices the loading rank holds and maps them back to its slots.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dsrun.moe.layer import MoE

EXPERTS = "deepspeed_moe.experts.deepspeed_experts."


def _layers(model: nn.Module) -> list[tuple[str, MoE]]:
    """(key prefix of the layer's experts, layer) for every MoE layer in the model."""
    return [(f"{name}.{EXPERTS}" if name else EXPERTS, module) for name, module in model.named_modules()
            if isinstance(module, MoE)]


def expert_key_map(model: nn.Module) -> dict[str, str]:
    """local state-dict key -> global key, for every parameter and buffer of this rank's experts."""
    mapping: dict[str, str] = {}
    for prefix, layer in _layers(model):
        for slot, (global_id, expert) in enumerate(zip(layer.expert_global_ids,
                                                       layer.deepspeed_moe.experts.deepspeed_experts, strict=True)):
            for key in expert.state_dict():
                mapping[f"{prefix}{slot}.{key}"] = f"{prefix}{global_id}.{key}"
    return mapping


def to_global_keys(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """This rank's state dict with its experts under their global keys (other keys unchanged)."""
    mapping = expert_key_map(model)
    return {mapping.get(key, key): value for key, value in state_dict.items()}


def to_local_keys(global_state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """From a state dict with experts under global keys (any ep size's), what this rank's model loads: its own
    experts under their local keys, no other expert, every other key unchanged."""
    back = {global_key: local_key for local_key, global_key in expert_key_map(model).items()}
    prefixes = tuple(prefix for prefix, _ in _layers(model))
    local: dict[str, Any] = {}
    for key, value in global_state_dict.items():
        if key in back:
            local[back[key]] = value
        elif not key.startswith(prefixes):
            local[key] = value
    return local
