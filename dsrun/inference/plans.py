"""Which linear layers to split, found from the model's structure (no architecture names needed).

An attention block is a module holding q_proj/k_proj/v_proj/o_proj (Llama, Mistral, Qwen2, ...) or a fused
c_attn plus c_proj (GPT-2); an MLP block holds gate_proj/up_proj/down_proj (or up_proj/down_proj) or c_fc/c_proj.
The projections into a block are split column-wise (each rank computes its heads / its slice of the hidden layer)
and the projection out of it row-wise (partial sums joined by one all-reduce), so activations between blocks stay
whole and the embeddings, norms and LM head are left as they are.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from torch import nn

from dsrun.errors import UsageError

COLWISE, ROWWISE, FUSED_QKV = "colwise", "rowwise", "fused_qkv"


@dataclass
class Attention:
    """An attention module whose head counts the split changes: each rank runs heads/tp and kv_heads/tp heads."""

    name: str
    module: nn.Module
    heads: int
    kv_heads: int


@dataclass
class Plan:
    styles: dict[str, str] = field(default_factory=dict)  # full module name -> COLWISE / ROWWISE / FUSED_QKV
    attention: list[Attention] = field(default_factory=list)


def _has(module: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(module, name, None), nn.Module) for name in names)


def _config_value(module: nn.Module, model: nn.Module, *names: str) -> int | None:
    for source in (module, getattr(module, "config", None), getattr(model, "config", None)):
        for name in names:
            value = getattr(source, name, None) if source is not None else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _inside_experts(model: nn.Module) -> set[int]:
    """The modules of dsrun MoE layers' experts. They stay whole on every rank (each rank runs every expert, ep_size
    1): an expert sees only the tokens routed to it, so splitting it would add an all-reduce per expert call for a
    small layer, and its names (often up_proj/down_proj) must not make it look like the model's own MLP blocks."""
    from dsrun.moe.experts import Experts

    return {id(inner) for module in model.modules() if isinstance(module, Experts) for inner in module.modules()}


def automatic(model: nn.Module) -> Plan:
    plan = Plan()
    experts = _inside_experts(model)
    for name, module in model.named_modules():
        if id(module) in experts:
            continue
        prefix = f"{name}." if name else ""
        if _has(module, "q_proj", "k_proj", "v_proj", "o_proj"):
            for part in ("q_proj", "k_proj", "v_proj"):
                plan.styles[prefix + part] = COLWISE
            plan.styles[prefix + "o_proj"] = ROWWISE
            heads = _config_value(module, model, "num_heads", "num_attention_heads")
            kv = _config_value(module, model, "num_key_value_heads", "num_kv_heads")
            if heads is None:
                raise UsageError(f"{name}: an attention block whose number of heads dsrun cannot find (no num_heads"
                                 " or config.num_attention_heads): give tp_plan explicitly")
            plan.attention.append(Attention(name, module, heads, kv if kv is not None else heads))
        elif _has(module, "c_attn", "c_proj") and not _has(module, "q_attn"):
            heads = _config_value(module, model, "num_heads", "n_head", "num_attention_heads")
            if heads is None:
                raise UsageError(f"{name}: a GPT-2-style attention block without num_heads: give tp_plan explicitly")
            plan.styles[prefix + "c_attn"] = FUSED_QKV
            plan.styles[prefix + "c_proj"] = ROWWISE
            plan.attention.append(Attention(name, module, heads, heads))
        elif _has(module, "up_proj", "down_proj"):
            if _has(module, "gate_proj"):
                plan.styles[prefix + "gate_proj"] = COLWISE
            plan.styles[prefix + "up_proj"] = COLWISE
            plan.styles[prefix + "down_proj"] = ROWWISE
        elif _has(module, "c_fc", "c_proj"):
            plan.styles[prefix + "c_fc"] = COLWISE
            plan.styles[prefix + "c_proj"] = ROWWISE
    return plan


def explicit(model: nn.Module, patterns: dict[str, str]) -> Plan:
    """The user's plan: module name patterns (fnmatch, e.g. "layers.*.mlp.up_proj") -> "colwise" / "rowwise".
    Head counts are left alone: the model's forward must size its heads from the local projections."""
    plan = Plan()
    names = [name for name, _ in model.named_modules() if name]
    for pattern, style in patterns.items():
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise UsageError(f"tp_plan pattern {pattern!r} matches no module of the model (names look like"
                             f" {names[min(3, len(names) - 1)]!r})" if names else f"tp_plan pattern {pattern!r}:"
                             " the model has no submodules")
        for name in matched:
            if name in plan.styles and plan.styles[name] != style:
                raise UsageError(f"tp_plan gives module {name!r} both colwise and rowwise")
            plan.styles[name] = style
    return plan


def check_divides(plan: Plan, tp_size: int) -> None:
    for block in plan.attention:
        for what, count in (("attention heads", block.heads), ("key/value heads", block.kv_heads)):
            if count % tp_size:
                raise UsageError(f"tp_size={tp_size} does not divide the {count} {what} of {block.name}: choose a"
                                 f" tp_size that divides {count}")
