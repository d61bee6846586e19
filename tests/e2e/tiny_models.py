"""Model factories for the dry run's --model probe (tests/e2e/test_memory_estimate.py)."""

from torch import nn


def mlp():
    """32 -> 64 -> 64 -> 8 with ReLUs: 2112 + 4160 + 520 = 6792 parameters."""
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))


def broken():
    raise ValueError("no such width")


def not_a_module():
    return {"layers": 3}
