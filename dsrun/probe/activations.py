"""Activation memory of one micro-batch, from the tensors autograd saves for the backward.

The forward runs on meta tensors (shapes and dtypes, no data), under saved_tensors_hooks: every tensor autograd keeps
for the backward passes through the pack hook, and the bytes of their storages (each counted once, parameters
excluded: they are model state), with the output, are what a training forward holds at its end: the activation
peak.

With activation checkpointing (torch.utils.checkpoint around each block, the entries of the model's
ModuleLists/Sequentials as in stage 3's units) a block keeps only its inputs, and its backward recomputes one block
at a time: the estimate is what runs outside the blocks + every block's inputs + the largest block's own saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


class FlashAttentionOnMeta(TorchFunctionMode):
    """scaled_dot_product_attention on meta tensors as the flash kernel a real run picks (GPUs and CPUs alike).

    On the meta device torch falls back to the math path, which saves the time x time attention weights for the
    backward; the flash kernel saves only q, k, v, the output and a logsumexp per row. Without this the benchmark
    GPT's estimate was 12% above the same count on real tensors. Calls the flash kernel cannot take (an attention
    mask, grouped-query attention) keep the math path: an overestimate, never an underestimate.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            call = {**dict(zip(_SDPA_ARGS, args, strict=False)), **kwargs}
            query = call["query"]
            if query.is_meta and call.get("attn_mask") is None and not call.get("enable_gqa", False):
                return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    query, call["key"], call["value"], call.get("dropout_p", 0.0), call.get("is_causal", False),
                    scale=call.get("scale"))[0]
        return func(*args, **kwargs)


def _storage_key(tensor: torch.Tensor) -> int:
    # The StorageImpl's address: shared by all views of one storage, also on the meta device (data_ptr is 0 there).
    return tensor.untyped_storage()._cdata


@dataclass
class _Tally:
    excluded: set[int]  # parameter storages
    seen: set[int] = field(default_factory=set)
    keep: list[torch.Tensor] = field(default_factory=list)  # alive until counted, so no storage address is reused
    outside: int = 0
    per_block: dict[int, int] = field(default_factory=dict)
    block_inputs: dict[int, int] = field(default_factory=dict)
    current: int | None = None

    def add(self, tensor: torch.Tensor) -> int:
        """Bytes `tensor` adds (0 if its storage is counted already or is a parameter's)."""
        key = _storage_key(tensor)
        if key in self.excluded or key in self.seen:
            return 0
        self.seen.add(key)
        self.keep.append(tensor)
        return tensor.untyped_storage().nbytes()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        added = self.add(tensor)
        if self.current is None:
            self.outside += added
        else:
            self.per_block[self.current] = self.per_block.get(self.current, 0) + added
        return tensor


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def saved_bytes(model: nn.Module, inputs: tuple, blocks: list[nn.Module]) -> dict[str, int]:
    """Run forward + a scalar reduction of the output and count what autograd saves; see the module docstring."""
    tally = _Tally(excluded={_storage_key(p) for p in model.parameters()})
    inputs_seen: set[int] = set()

    def enter(index: int):
        def hook(module, args, kwargs=None):
            tally.current = index
            size = 0
            for tensor in _tensors(args):
                key = _storage_key(tensor)
                if key not in inputs_seen and key not in tally.excluded:
                    inputs_seen.add(key)
                    size += tensor.untyped_storage().nbytes()
            tally.block_inputs[index] = size
        return hook

    def leave(module, args, output):
        tally.current = None

    handles = []
    for index, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(enter(index)))
        handles.append(block.register_forward_hook(leave))
    try:
        with FlashAttentionOnMeta(), torch.autograd.graph.saved_tensors_hooks(tally.pack, lambda t: t):
            output = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    outputs = [t for t in _tensors(output) if t.requires_grad]
    if not outputs:
        raise ValueError("the forward's output has no tensor that needs a gradient: nothing to train")
    # The output lives on until the loss's backward has used it: part of the peak, unless saved already.
    tally.current = None
    for tensor in outputs:
        tally.pack(tensor)
    no_checkpointing = tally.outside + sum(tally.per_block.values())
    largest_block = max(tally.per_block.values(), default=0)
    with_checkpointing = tally.outside + sum(tally.block_inputs.values()) + largest_block
    return {
        "saved_bytes": no_checkpointing,
        "checkpointed_bytes": min(with_checkpointing, no_checkpointing) if blocks else no_checkpointing,
        "outside_blocks_bytes": tally.outside,
        "largest_block_saved_bytes": largest_block,
        "block_input_bytes": sum(tally.block_inputs.values()),
        "blocks": len(blocks),
        "output_bytes": sum(t.untyped_storage().nbytes() for t in outputs),
    }
