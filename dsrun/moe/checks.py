"""The MoE layer's argument checks, each a one-line UsageError naming the fix.

DeepSpeed asserts these (a traceback from every rank, or none at all for an unknown `k` > 2, which it routes to
another gate); dsrun stops the job with one line, like its other mistakes.
"""

from __future__ import annotations

from dsrun.errors import UsageError

NOISY_GATE_POLICIES = (None, "None", "Jitter", "RSample")

def check_layer(num_experts: int, ep_size: int, k: int, noisy_gate_policy: str | None) -> None:
    if num_experts < 1:
        raise UsageError(f"MoE num_experts={num_experts}: give at least 1 expert")
    if ep_size < 1:
        raise UsageError(f"MoE ep_size={ep_size}: the expert-parallel size is at least 1")
    if num_experts % ep_size != 0:
        raise UsageError(f"MoE num_experts={num_experts} is not divisible by ep_size={ep_size}: every rank of an "
                         f"expert-parallel group holds num_experts // ep_size experts, so pick ep_size among "
                         f"{divisors(num_experts)}")
    if k not in (1, 2):
        raise UsageError(f"MoE k={k}: DeepSpeed's MoE layer gates top-1 or top-2; use k=1 or k=2")
    if noisy_gate_policy not in NOISY_GATE_POLICIES:
        raise UsageError(f"MoE noisy_gate_policy={noisy_gate_policy!r} is unknown: use None, 'Jitter' or 'RSample'")


def check_world(ep_size: int, world_size: int, pp_size: int = 1) -> None:
    """Expert-parallel groups are blocks of ep_size ranks inside one pipeline stage's data-parallel ranks."""
    if pp_size < 1 or world_size % pp_size != 0:
        raise UsageError(f"{pp_size} pipeline stages do not divide the world size {world_size}")
    per_stage = world_size // pp_size
    if per_stage % ep_size != 0:
        where = f"the {per_stage} data-parallel ranks of a pipeline stage" if pp_size > 1 else \
            f"the world size {world_size}"
        raise UsageError(f"MoE ep_size={ep_size} does not divide {where}: expert-parallel groups are blocks of "
                         f"ep_size ranks, so use an ep_size among {divisors(per_stage)} (or change the rank count)")


def check_tokens(num_tokens: int, min_capacity: int) -> None:
    """DeepSpeed's top-1 gate asserts this: fewer tokens than min_capacity cannot fill the capacity it reserves."""
    if num_tokens < min_capacity:
        raise UsageError(f"MoE: {num_tokens} tokens reach the layer, fewer than min_capacity={min_capacity}: lower "
                         f"min_capacity (0 is allowed) or give the layer more tokens per batch")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
