"""The model the train-step and memory benchmarks train: a small GPT, synthetic tokens, a plain-torch loss.

Sized like the DeepSpeed measurements in DESIGN.md (about 5.3M parameters, context 128) so the figures compare.
Every implementation builds its copy with `build_model()`, which seeds its own generator: the same initial
weights on every rank and for every implementation, without touching the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    vocab: int = 1024
    context: int = 128
    width: int = 256
    heads: int = 4
    layers: int = 6


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        # [batch, heads, time, head_width], the layout scaled_dot_product_attention expects
        q, k, v = (t.view(batch, time, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, time, width))


class Block(nn.Module):
    """Pre-LN: normalise, transform, add back. One FSDP unit per block in the sharded stages."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, 4 * cfg.width), nn.GELU(), nn.Linear(4 * cfg.width, cfg.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(cfg.vocab, cfg.width)
        self.positions = nn.Embedding(cfg.context, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def _init_weights(model: GPT, generator: torch.Generator) -> None:
    # GPT-2's scheme: N(0, 0.02) everywhere, output projections scaled down by depth so the residual stream does
    # not grow with the number of blocks; norms at 1/0.
    residual_std = 0.02 / math.sqrt(2 * model.cfg.layers)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            std = residual_std if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
            param.copy_(torch.randn(param.shape, generator=generator) * std)


def build_model(cfg: GPTConfig = GPTConfig(), seed: int = 0) -> GPT:
    model = GPT(cfg)
    _init_weights(model, torch.Generator().manual_seed(seed))
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def synthetic_tokens(cfg: GPTConfig, sequences: int, seed: int = 1234) -> torch.Tensor:
    """[sequences, context + 1] tokens from a fixed random bigram chain: learnable, so the loss visibly falls
    (uniform random tokens would sit at log(vocab) and hide a broken update)."""
    generator = torch.Generator().manual_seed(seed)
    # Each token has 8 likely successors: a sparse, peaked transition table.
    successors = torch.randint(cfg.vocab, (cfg.vocab, 8), generator=generator)
    out = torch.empty(sequences, cfg.context + 1, dtype=torch.long)
    out[:, 0] = torch.randint(cfg.vocab, (sequences,), generator=generator)
    for t in range(1, cfg.context + 1):
        pick = torch.randint(8, (sequences,), generator=generator)
        out[:, t] = successors[out[:, t - 1], pick]
    return out


class TokenBatches:
    """Micro-batch `index` of `rank`: disjoint across ranks and steps, identical for every implementation."""

    def __init__(self, cfg: GPTConfig, micro_batch: int, world: int, micro_batches: int, seed: int = 1234):
        self.micro_batch, self.world = micro_batch, world
        self.count = micro_batches
        self.data = synthetic_tokens(cfg, micro_batches * world * micro_batch, seed)

    def get(self, index: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        index %= self.count  # a long run wraps around rather than failing
        start = (index * self.world + rank) * self.micro_batch
        chunk = self.data[start : start + self.micro_batch]
        return chunk[:, :-1], chunk[:, 1:]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy, computed in fp32 whatever the logits' dtype (bf16 logits lose the small terms)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
